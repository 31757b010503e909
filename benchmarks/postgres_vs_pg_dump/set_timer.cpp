// Benchmark 2's C++ side: one postgres::backup_database or restore_database through a pool of
// --jobs + 1 connections, timed, as one JSON line on stdout. run.py (beside this file) starts
// the server, makes the data and alternates this program with pg_dump -j / pg_restore -j.
//
//   set_timer backup  --jobs 2 --compression zstd --level 1 "host=... dbname=bench" DIR
//   set_timer restore --jobs 2 "host=... dbname=empty" DIR
//
// The password may be in the conninfo; it is never printed.

#include <connpool.hpp>
#include <connpool/postgres.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

namespace {

namespace pg = connpool::postgres;

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "set_timer: %s\nusage: set_timer backup|restore [--jobs N] [--compression zstd|none] [--level L] "
                 "CONNINFO DIR\n",
                 why);
    std::exit(2);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) usage("no operation");
    const std::string op = argv[1];
    if (op != "backup" && op != "restore") usage("the operation is 'backup' or 'restore'");
    int jobs = 2, level = 1;
    bool zstd = true;
    std::string conninfo, dir;
    for (int i = 2; i < argc; ++i) {
        const std::string_view a = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage("an option lacks its value");
            return argv[++i];
        };
        if (a == "--jobs") {
            jobs = std::atoi(value().c_str());
        } else if (a == "--level") {
            level = std::atoi(value().c_str());
        } else if (a == "--compression") {
            const std::string c = value();
            if (c != "zstd" && c != "none") usage("--compression is zstd or none");
            zstd = c == "zstd";
        } else if (conninfo.empty()) {
            conninfo = a;
        } else if (dir.empty()) {
            dir = a;
        } else {
            usage("too many arguments");
        }
    }
    if (jobs < 1 || dir.empty()) usage("expected --jobs >= 1, a CONNINFO and a DIR");
    try {
        connpool::PoolOptions options;
        options.max_size = static_cast<std::size_t>(jobs) + 1; // the leader plus N table jobs
        using Pool = connpool::Pool<pg::Connection, pg::Factory>;
        Pool pool{pg::Factory{conninfo}, options};
        connpool::JobRunner runner{pool};
        const auto started = std::chrono::steady_clock::now();
        connpool::JobState end{};
        std::uint64_t bytes = 0;
        std::size_t tables = 0;
        std::string error;
        if (op == "backup") {
            pg::DatabaseBackupOptions o;
            o.table.compression = zstd ? pg::Compression::zstd : pg::Compression::none;
            o.table.zstd_level = level;
            const auto set = pg::backup_database(runner, dir, o);
            end = set.wait();
            bytes = set.progress().done;
            tables = set.tables().size();
            error = set.error();
        } else {
            const auto set = pg::restore_database(runner, dir);
            end = set.wait();
            bytes = set.progress().done;
            tables = set.tables().size();
            error = set.error();
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (end != connpool::JobState::succeeded) {
            std::fprintf(stderr, "set_timer: %s failed: %s\n", op.c_str(), error.c_str());
            return 1;
        }
        std::printf("{\"op\": \"%s\", \"seconds\": %.6f, \"bytes\": %llu, \"tables\": %zu}\n", op.c_str(), seconds,
                    static_cast<unsigned long long>(bytes), tables);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "set_timer: %s\n", e.what());
        return 1;
    }
}
