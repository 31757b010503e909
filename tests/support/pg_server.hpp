#pragma once

// A real PostgreSQL 15 server for a test binary: initdb in a temporary directory (as the
// `postgres` user when the tests run as root, since initdb refuses root), a free loopback TCP
// port, SCRAM password authentication on TCP, fsync off, the unix socket inside the directory.
// Started once, on first use, and stopped at exit; a watchdog process (its own session, so a
// ctest timeout that kills the test's process group leaves it alive) stops the server and
// removes the directory when the test binary dies in any way, SIGKILL included.
//
// With CI set in the environment a server that cannot start fails every test that needs it;
// locally those tests skip, loudly, with the reason.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace connpool::testing {

/// Where Debian puts PostgreSQL 15's server binaries (override with CONNPOOL_PG_BINDIR).
inline std::string pg_bindir() {
    if (const char* dir = std::getenv("CONNPOOL_PG_BINDIR"); dir != nullptr && *dir != '\0') return dir;
    return "/usr/lib/postgresql/15/bin";
}

/// Returns `s` single-quoted for /bin/sh.
inline std::string sh_quote(const std::string& s) {
    std::string out = "'";
    for (const char c : s) {
        if (c == '\'') {
            out += "'\\''";
        } else {
            out += c;
        }
    }
    return out + "'";
}

/// Runs `command` with /bin/sh, its output (both streams) appended to `log`; returns its exit
/// status (-1 when it did not exit normally).
inline int run_shell(const std::string& command, const std::filesystem::path& log) {
    const std::string full = "( " + command + " ) >>" + sh_quote(log.string()) + " 2>&1 </dev/null";
    const int status = std::system(full.c_str());
    return (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
}

/// Returns the whole file at `path` ("" if unreadable).
inline std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Returns a TCP port on 127.0.0.1 that nothing listens on right now (-1 if none).
inline int free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    int port = -1;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

/// A throwaway PostgreSQL cluster; see the file comment. All members are safe to call from any
/// thread once started; restart()/stop()/start() are for fault tests (one test at a time).
class PgServer {
public:
    /// The superuser's name and password (SCRAM over TCP).
    static constexpr const char* user = "connpool";
    static constexpr const char* password = "s3cr3t-Pa55word";

    /// Returns the binary's server, starting it on first call. Never throws: see error().
    static PgServer& instance() {
        static PgServer* server = [] {
            auto* s = new PgServer(); // never destroyed: the atexit hook stops it
            s->boot();
            std::atexit([] { instance().shutdown(); });
            return s;
        }();
        return *server;
    }

    /// Returns why the server could not start ("" when it runs).
    [[nodiscard]] const std::string& error() const noexcept { return error_; }
    /// Returns the TCP port on 127.0.0.1.
    [[nodiscard]] int port() const noexcept { return port_; }
    /// Returns the cluster's directory (data in data/, socket in the directory itself).
    [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

    /// Returns a libpq conninfo for `dbname` over TCP with the password.
    [[nodiscard]] std::string conninfo(const std::string& dbname = "postgres") const {
        return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user + " password=" + password +
               " dbname=" + dbname;
    }

    /// Returns the conninfo without the password, plus the environment a libpq tool needs to log in
    /// (PGPASSWORD), as a shell prefix: for psql, pgbench and pg_dump in tests and benchmarks.
    [[nodiscard]] std::string tool_env() const {
        return "PGPASSWORD=" + sh_quote(password) + " PGHOST=127.0.0.1 PGPORT=" + std::to_string(port_) +
               " PGUSER=" + user + " ";
    }

    /// Runs `sql` with psql on `dbname` (stops at the first error); returns psql's exit status.
    int psql(const std::string& sql, const std::string& dbname = "postgres") const {
        return run_shell(tool_env() + sh_quote(pg_bindir() + "/psql") + " -X -q -v ON_ERROR_STOP=1 -d " +
                             sh_quote(dbname) + " -c " + sh_quote(sql),
                         dir_ / "psql.log");
    }

    /// Stops the server (fast mode: sessions are terminated). For fault tests.
    void stop() { run_as_owner(ctl() + " -w -t 60 -m fast stop"); }
    /// Starts it again on the same port after stop().
    bool start() { return run_as_owner(ctl() + " -w -t 60 -l " + sh_quote((dir_ / "server.log").string()) + " start") == 0; }
    /// Restarts it (fast mode): every open connection is closed by the server.
    bool restart() {
        return run_as_owner(ctl() + " -w -t 60 -m fast -l " + sh_quote((dir_ / "server.log").string()) + " restart") == 0;
    }
    /// Returns the server's log so far (for failure messages).
    [[nodiscard]] std::string log() const { return slurp(dir_ / "server.log"); }

    PgServer(const PgServer&) = delete;
    PgServer& operator=(const PgServer&) = delete;

private:
    PgServer() = default;

    [[nodiscard]] std::string ctl() const { return sh_quote(pg_bindir() + "/pg_ctl") + " -D " + sh_quote((dir_ / "data").string()); }

    /// Runs `command` as the cluster's owner (the postgres user when we are root).
    int run_as_owner(const std::string& command) const {
        if (::geteuid() == 0) return run_shell("runuser -u postgres -- sh -c " + sh_quote(command), dir_ / "setup.log");
        return run_shell(command, dir_ / "setup.log");
    }

    void boot() {
        try {
            boot_or_throw();
        } catch (const std::exception& e) {
            error_ = e.what();
            std::fprintf(stderr,
                         "\n*** PostgreSQL test server could not start: %s\n*** The PostgreSQL tests %s.\n\n",
                         error_.c_str(), std::getenv("CI") != nullptr ? "FAIL (CI is set)" : "are SKIPPED");
        }
    }

    void boot_or_throw() {
        if (!std::filesystem::exists(pg_bindir() + "/initdb"))
            throw std::runtime_error("no " + pg_bindir() +
                                     "/initdb (Debian: apt-get install postgresql; or set CONNPOOL_PG_BINDIR)");
        std::string pattern = (std::filesystem::temp_directory_path() / "connpool-pg-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
        dir_ = pattern;
        start_watchdog();
        if (::geteuid() == 0) {
            const passwd* pw = ::getpwnam("postgres");
            if (pw == nullptr) throw std::runtime_error("running as root and there is no 'postgres' user for initdb");
            if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
                throw std::runtime_error("chown " + dir_.string() + ": " + std::strerror(errno));
        }
        ::chmod(dir_.c_str(), 0755); // the test process (root or the owner) reads the logs
        const auto pwfile = dir_ / "pwfile";
        std::ofstream(pwfile) << password << "\n";
        if (::geteuid() == 0) {
            const passwd* pw = ::getpwnam("postgres");
            if (::chown(pwfile.c_str(), pw->pw_uid, pw->pw_gid) != 0)
                throw std::runtime_error("chown " + pwfile.string() + ": " + std::strerror(errno));
        }
        const std::string initdb = sh_quote(pg_bindir() + "/initdb") + " -D " + sh_quote((dir_ / "data").string()) +
                                   " -U " + user + " --pwfile=" + sh_quote(pwfile.string()) +
                                   " -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 --no-sync";
        if (run_as_owner(initdb) != 0) throw std::runtime_error("initdb failed:\n" + slurp(dir_ / "setup.log"));
        for (int attempt = 0; attempt < 5; ++attempt) {
            port_ = free_loopback_port();
            if (port_ < 0) throw std::runtime_error("no free loopback port");
            {
                std::ofstream conf(dir_ / "data" / "postgresql.auto.conf", std::ios::trunc);
                conf << "listen_addresses = '127.0.0.1'\n"
                     << "port = " << port_ << "\n"
                     << "unix_socket_directories = '" << dir_.string() << "'\n"
                     << "password_encryption = 'scram-sha-256'\n"
                     << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                     << "shared_buffers = '32MB'\nmax_connections = 60\n"
                     << "max_wal_size = '1GB'\n";
            }
            if (::geteuid() == 0) run_shell("chown postgres: " + sh_quote((dir_ / "data" / "postgresql.auto.conf").string()), dir_ / "setup.log");
            if (start()) return;
        }
        throw std::runtime_error("pg_ctl start failed:\n" + slurp(dir_ / "setup.log") + "\n" + log());
    }

    /// A child in its own session that waits for EOF on a pipe only we hold the write end of
    /// (close-on-exec, so the server never inherits it): EOF means we exited or died.
    void start_watchdog() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        const std::string data = (dir_ / "data").string();
        std::string stop = "cat >/dev/null; ";
        if (::geteuid() == 0) {
            stop += "runuser -u postgres -- " + sh_quote(pg_bindir() + "/pg_ctl") + " -D " + sh_quote(data) +
                    " -m immediate -w stop >/dev/null 2>&1; ";
        } else {
            stop += sh_quote(pg_bindir() + "/pg_ctl") + " -D " + sh_quote(data) + " -m immediate -w stop >/dev/null 2>&1; ";
        }
        stop += "rm -rf " + sh_quote(dir_.string());
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0); // dup2 clears close-on-exec
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
        const char* argv[] = {"/bin/sh", "-c", stop.c_str(), nullptr};
        pid_t pid = 0;
        const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char**>(argv), environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        ::close(fds[0]);
        if (rc != 0) {
            ::close(fds[1]);
            throw std::runtime_error("cannot start the watchdog: " + std::string(std::strerror(rc)));
        }
        watchdog_ = pid;
        watchdog_pipe_ = fds[1];
    }

    /// At exit: closing the pipe makes the watchdog stop the server and remove the directory;
    /// we wait for it so the next binary's server never races this one's shutdown.
    void shutdown() {
        if (watchdog_pipe_ < 0) return;
        ::close(watchdog_pipe_);
        watchdog_pipe_ = -1;
        int status = 0;
        while (::waitpid(watchdog_, &status, 0) < 0 && errno == EINTR) {
        }
    }

    std::filesystem::path dir_;
    int port_ = -1;
    std::string error_;
    pid_t watchdog_ = -1;
    int watchdog_pipe_ = -1;
};

/// For a test's SetUp: the running server, or (server down) a failure on CI and a skip elsewhere.
#define CONNPOOL_REQUIRE_PG_SERVER()                                                                   \
    do {                                                                                               \
        if (const auto& why = ::connpool::testing::PgServer::instance().error(); !why.empty()) {       \
            if (std::getenv("CI") != nullptr) FAIL() << "PostgreSQL test server could not start: " << why; \
            GTEST_SKIP() << "PostgreSQL test server could not start (set up postgresql 15): " << why;     \
        }                                                                                              \
    } while (false)

} // namespace connpool::testing
