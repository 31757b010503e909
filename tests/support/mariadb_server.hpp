#pragma once

// A real MariaDB server for a test binary (or a benchmark): mariadb-install-db into a temporary
// directory (owned by the `mysql` user when we run as root: mariadbd then drops to it), mariadbd
// on a free loopback TCP port and on its own unix socket, no binary log, InnoDB's log flushed
// once a second instead of at every commit and a small buffer pool, so it starts in seconds
// and never touches a system server. A user with a password (mysql_native_password: real
// authentication on every connection) and a test database are created. Started once, on first
// use, and stopped at exit (SIGTERM, waited for); a watchdog process (its own session) kills the
// server and removes the directory when the binary dies in any way, SIGKILL included.
// stop(), start() and restart() are for fault tests.
//
// With CI set in the environment a server that cannot start fails every test that needs it
// (with the server's log tail); locally those tests skip, loudly, with the reason.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <connpool/mysql.hpp>

#include "pg_server.hpp" // sh_quote, run_shell, slurp, free_loopback_port

extern char** environ;

namespace connpool::testing {

/// A throwaway MariaDB server; see the file comment. The accessors are safe from any thread
/// once it started; stop()/start()/restart() are for fault tests (one test at a time).
class MariadbServer {
public:
    /// The test user's name and password (mysql_native_password, over TCP and the socket).
    static constexpr const char* user = "connpool";
    static constexpr const char* password = "My5ql-s3cr3t-Pa55";
    /// The database created for the tests.
    static constexpr const char* database = "connpool_test";

    /// Returns the binary's server, starting it on first call. Never throws: see error().
    static MariadbServer& instance() {
        static MariadbServer* server = [] {
            auto* s = new MariadbServer(); // never destroyed: the atexit hook stops it
            s->boot();
            std::atexit([] { instance().shutdown(); });
            return s;
        }();
        return *server;
    }

    /// Returns why the server could not start ("" when it runs).
    [[nodiscard]] const std::string& error() const noexcept { return error_; }
    /// Returns the TCP port on 127.0.0.1.
    [[nodiscard]] unsigned int port() const noexcept { return port_; }
    /// Returns the server's directory (data in data/, the socket, logs).
    [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
    /// Returns the unix socket's path.
    [[nodiscard]] std::string socket() const { return (dir_ / "mysqld.sock").string(); }

    /// Returns options for the test user over TCP to `db` (default: the test database).
    [[nodiscard]] connpool::mysql::ConnectOptions tcp(const std::string& db = database) const {
        return connpool::mysql::ConnectOptions{"127.0.0.1", port_, user, password, db, ""};
    }
    /// Returns options for the test user over the unix socket.
    [[nodiscard]] connpool::mysql::ConnectOptions unix_socket(const std::string& db = database) const {
        return connpool::mysql::ConnectOptions{"", 0, user, password, db, socket()};
    }
    /// Returns a connection as root over the socket (for set-up and for looking at the server).
    [[nodiscard]] connpool::mysql::Connection root() const {
        return connpool::mysql::Factory(connpool::mysql::ConnectOptions{"", 0, "root", "", "", socket()}).create();
    }

    /// Returns the environment prefix a MariaDB tool needs to log in as the test user over TCP
    /// (MYSQL_PWD), for mariadb, mysqldump and mydumper in benchmarks.
    [[nodiscard]] std::string tool_env() const { return "MYSQL_PWD=" + sh_quote(password) + " "; }

    /// Stops the server (SIGTERM, waits for it to exit): every connection is closed.
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
    }
    /// Starts it again on the same port and socket after stop(); returns whether it is ready.
    bool start() {
        try {
            spawn_and_wait();
            return true;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "MariaDB test server did not start again: %s\n", e.what());
            return false;
        }
    }
    /// Restarts it: every open connection is closed by the server.
    bool restart() {
        stop();
        return start();
    }
    /// Returns the last `lines` lines of the server's error log (for failure messages).
    [[nodiscard]] std::string log_tail(std::size_t lines = 40) const {
        const std::string text = slurp(dir_ / "server.log");
        std::size_t at = text.size();
        for (std::size_t n = 0; n <= lines && at != std::string::npos && at > 0; ++n) at = text.rfind('\n', at - 1);
        return at == std::string::npos ? text : text.substr(at + 1);
    }

    MariadbServer(const MariadbServer&) = delete;
    MariadbServer& operator=(const MariadbServer&) = delete;

private:
    MariadbServer() = default;

    static std::string find_binary(const char* name, const std::vector<std::string>& dirs) {
        for (const auto& d : dirs)
            if (std::filesystem::exists(d + "/" + name)) return d + "/" + name;
        return "";
    }

    void boot() {
        try {
            boot_or_throw();
        } catch (const std::exception& e) {
            error_ = e.what();
            std::fprintf(stderr, "\n*** MariaDB test server could not start: %s\n*** The MySQL tests %s.\n\n",
                         error_.c_str(), std::getenv("CI") != nullptr ? "FAIL (CI is set)" : "are SKIPPED");
        }
    }

    void boot_or_throw() {
        server_bin_ = find_binary("mariadbd", {"/usr/sbin", "/usr/bin", "/usr/libexec"});
        const std::string install = find_binary("mariadb-install-db", {"/usr/bin", "/usr/sbin"});
        if (server_bin_.empty() || install.empty())
            throw std::runtime_error("no mariadbd or mariadb-install-db (Debian: apt-get install mariadb-server)");
        std::string pattern = (std::filesystem::temp_directory_path() / "connpool-mariadb-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
        dir_ = pattern;
        start_watchdog();
        ::chmod(dir_.c_str(), 0755); // the test process (root or the owner) reads the logs
        std::string as_user;
        if (::geteuid() == 0) {
            const passwd* pw = ::getpwnam("mysql");
            if (pw == nullptr) throw std::runtime_error("running as root and there is no 'mysql' user for mariadbd");
            if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
                throw std::runtime_error("chown " + dir_.string() + ": " + std::strerror(errno));
            as_user = " --user=mysql";
        }
        // root@localhost authenticates by unix_socket (as the OS user running the tests) or,
        // when we are not root, by the empty password ("normal"); only the fixture uses it.
        const std::string command = sh_quote(install) + " --no-defaults --datadir=" + sh_quote((dir_ / "data").string()) +
                                    as_user + " --skip-test-db --auth-root-authentication-method=" +
                                    (::geteuid() == 0 ? "socket" : "normal");
        if (run_shell(command, dir_ / "setup.log") != 0)
            throw std::runtime_error("mariadb-install-db failed:\n" + slurp(dir_ / "setup.log"));
        std::string last;
        for (int attempt = 0; attempt < 5; ++attempt) {
            const int port = free_loopback_port();
            if (port < 0) throw std::runtime_error("no free loopback port");
            port_ = static_cast<unsigned int>(port);
            try {
                spawn_and_wait();
                last.clear();
                break;
            } catch (const std::exception& e) {
                last = e.what(); // most likely the port was taken meanwhile: try another
            }
        }
        if (!last.empty()) throw std::runtime_error(last);
        auto r = root();
        r.exec(std::string("CREATE USER '") + user + "'@'%' IDENTIFIED BY '" + password + "'");
        r.exec(std::string("GRANT ALL PRIVILEGES ON *.* TO '") + user + "'@'%'");
        r.exec(std::string("CREATE DATABASE ") + database + " CHARACTER SET utf8mb4");
    }

    /// Starts mariadbd and waits until it takes connections on its socket; throws with the log tail.
    void spawn_and_wait() {
        std::vector<std::string> args{server_bin_,
                                      "--no-defaults",
                                      "--datadir=" + (dir_ / "data").string(),
                                      "--port=" + std::to_string(port_),
                                      "--bind-address=127.0.0.1",
                                      "--socket=" + socket(),
                                      "--pid-file=" + (dir_ / "mysqld.pid").string(),
                                      "--log-error=" + (dir_ / "server.log").string(),
                                      "--skip-log-bin",
                                      "--skip-name-resolve",
                                      "--innodb-flush-log-at-trx-commit=0",
                                      "--innodb-buffer-pool-size=64M",
                                      "--innodb-log-file-size=48M",
                                      "--innodb-doublewrite=0",
                                      "--max-connections=300",
                                      "--character-set-server=utf8mb4",
                                      "--collation-server=utf8mb4_unicode_ci",
                                      "--local-infile=1"};
        if (::geteuid() == 0) args.emplace_back("--user=mysql");
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        const std::string out = (dir_ / "stdout.log").string();
        posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        pid_t pid = 0;
        const int rc = ::posix_spawn(&pid, server_bin_.c_str(), &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start mariadbd: " + std::string(std::strerror(rc)));
        pid_ = pid;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{60};
        std::string why;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("mariadbd exited during start-up; its log ends:\n" + log_tail());
            }
            try {
                (void)root();
                return;
            } catch (const std::exception& e) {
                why = e.what();
            }
            std::this_thread::sleep_for(std::chrono::milliseconds{50});
        }
        stop();
        throw std::runtime_error("mariadbd did not take connections within 60 s (" + why + "); its log ends:\n" + log_tail());
    }

    /// A child in its own session that waits for EOF on a pipe only we hold the write end of:
    /// EOF means we exited or died; it then kills the server and removes the directory.
    void start_watchdog() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        const std::string pidfile = sh_quote((dir_ / "mysqld.pid").string());
        const std::string stop = "cat >/dev/null; if [ -s " + pidfile + " ]; then p=$(cat " + pidfile +
                                 "); kill -KILL \"$p\" 2>/dev/null; while kill -0 \"$p\" 2>/dev/null; do sleep 0.05; done; fi; "
                                 "rm -rf " + sh_quote(dir_.string());
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
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

    /// At exit: stops the server cleanly, then lets the watchdog remove the directory.
    void shutdown() {
        stop();
        report_crash();
        if (watchdog_pipe_ < 0) return;
        ::close(watchdog_pipe_);
        watchdog_pipe_ = -1;
        int status = 0;
        while (::waitpid(watchdog_, &status, 0) < 0 && errno == EINTR) {
        }
    }

    /// A server crash is a MariaDB bug or ours, and the watchdog removes its log with the
    /// directory: print the crash report and keep the whole log beside the directory, so a
    /// failure on CI can be traced to a statement.
    void report_crash() const {
        const std::string text = slurp(dir_ / "server.log");
        const std::size_t at = text.find(" got signal ");
        if (at == std::string::npos) return;
        const std::string kept = dir_.string() + "-crash.log";
        std::error_code ec;
        std::filesystem::copy_file(dir_ / "server.log", kept, std::filesystem::copy_options::overwrite_existing, ec);
        const std::size_t from = text.rfind('\n', at);
        std::fprintf(stderr, "\n*** mariadbd crashed during this suite (whole log kept in %s):\n%s\n", kept.c_str(),
                     text.substr(from == std::string::npos ? 0 : from + 1, 6000).c_str());
    }

    std::filesystem::path dir_;
    std::string server_bin_;
    unsigned int port_ = 0;
    pid_t pid_ = -1;
    std::string error_;
    pid_t watchdog_ = -1;
    int watchdog_pipe_ = -1;
};

/// For a test's SetUp: the running server, or (server down) a failure on CI and a skip elsewhere.
#define CONNPOOL_REQUIRE_MARIADB_SERVER()                                                                   \
    do {                                                                                                    \
        if (const auto& why = ::connpool::testing::MariadbServer::instance().error(); !why.empty()) {       \
            if (std::getenv("CI") != nullptr) FAIL() << "MariaDB test server could not start: " << why;      \
            GTEST_SKIP() << "MariaDB test server could not start (apt-get install mariadb-server): " << why; \
        }                                                                                                   \
    } while (false)

} // namespace connpool::testing
