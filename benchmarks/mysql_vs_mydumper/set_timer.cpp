// Benchmark 2's C++ side for MySQL: one mysql::backup_database or restore_database through a
// pool of --jobs + 1 connections, timed, as one JSON line on stdout. run.py (beside this file)
// starts the server, makes the data and alternates this program with mydumper / myloader and
// mysqldump.
//
//   MYSQL_PWD=... set_timer backup  --jobs 2 --compression zstd --port 3306 --user u --database bench DIR
//   MYSQL_PWD=... set_timer restore --jobs 2 --port 3306 --user u --database empty DIR
//
// The password comes from MYSQL_PWD only; it is never printed.

#include <connpool.hpp>
#include <connpool/mysql.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

namespace {

namespace my = connpool::mysql;

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "set_timer: %s\nusage: set_timer backup|restore [--jobs N] [--compression zstd|none] [--level L] "
                 "[--chunk-mb M] [--no-verify] [--host H] [--port P] [--user U] --database DB DIR\n",
                 why);
    std::exit(2);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) usage("no operation");
    const std::string op = argv[1];
    if (op != "backup" && op != "restore") usage("the operation is 'backup' or 'restore'");
    int jobs = 2, level = 1, chunk_mb = 64;
    bool zstd = true, verify = true;
    my::ConnectOptions at;
    at.host = "127.0.0.1";
    std::string dir;
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
        } else if (a == "--chunk-mb") {
            chunk_mb = std::atoi(value().c_str());
        } else if (a == "--compression") {
            const std::string c = value();
            if (c != "zstd" && c != "none") usage("--compression is zstd or none");
            zstd = c == "zstd";
        } else if (a == "--no-verify") {
            verify = false;
        } else if (a == "--host") {
            at.host = value();
        } else if (a == "--port") {
            at.port = static_cast<unsigned>(std::atoi(value().c_str()));
        } else if (a == "--user") {
            at.user = value();
        } else if (a == "--database") {
            at.database = value();
        } else if (dir.empty()) {
            dir = a;
        } else {
            usage("too many arguments");
        }
    }
    if (jobs < 1 || chunk_mb < 0 || dir.empty() || at.database.empty()) usage("expected --jobs >= 1, --database and a DIR");
    if (const char* password = std::getenv("MYSQL_PWD")) at.password = password;
    try {
        connpool::PoolOptions options;
        options.max_size = static_cast<std::size_t>(jobs) + 1; // the leader plus N sessions
        using Pool = connpool::Pool<my::Connection, my::Factory>;
        Pool pool{my::Factory{at}, options};
        connpool::JobRunner runner{pool};
        const auto started = std::chrono::steady_clock::now();
        connpool::JobState end{};
        std::uint64_t bytes = 0;
        std::size_t tables = 0;
        std::string error;
        if (op == "backup") {
            my::DatabaseBackupOptions o;
            o.table.compression = zstd ? my::Compression::zstd : my::Compression::none;
            o.table.zstd_level = level;
            o.table.verify = verify;
            o.chunk_bytes = static_cast<std::uint64_t>(chunk_mb) << 20;
            const auto set = my::backup_database(runner, dir, o);
            end = set.wait();
            bytes = set.progress().done;
            tables = set.tables().size();
            error = set.error();
        } else {
            const auto set = my::restore_database(runner, dir);
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
        std::printf("{\"op\": \"%s\", \"seconds\": %.6f, \"bytes\": %llu, \"jobs\": %zu}\n", op.c_str(), seconds,
                    static_cast<unsigned long long>(bytes), tables);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "set_timer: %s\n", e.what());
        return 1;
    }
}
