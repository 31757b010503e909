#pragma once

// A real PgBouncer (Debian's /usr/sbin/pgbouncer; CONNPOOL_PGBOUNCER overrides) in session mode in
// front of the binary's PostgreSQL test server (pg_server.hpp), for one test: its own temporary
// directory, a free loopback port, every database of the server (`*`), SCRAM authentication with
// the server's own verifiers (read from pg_authid) as its auth_file, so a client that logs in
// with SCRAM is passed through to the server with the same keys. It refuses to run as root, so
// when the tests are root it runs as the postgres user, like the server; it dies with the test
// (PR_SET_PDEATHSIG) and is stopped by the destructor.
//
// With CI set, a PgBouncer that cannot start fails the test (CONNPOOL_REQUIRE_PGBOUNCER).

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "pg_server.hpp"

namespace connpool::testing {

/// A PgBouncer in session mode in front of `PgServer::instance()`; see the file comment.
class PgBouncer {
public:
    /// Starts it (never throws: see error()).
    PgBouncer() {
        try {
            start_or_throw();
        } catch (const std::exception& e) {
            error_ = e.what();
            stop();
        }
    }
    /// Stops it and removes its directory.
    ~PgBouncer() { stop(); }
    PgBouncer(const PgBouncer&) = delete;
    PgBouncer& operator=(const PgBouncer&) = delete;

    /// Returns why it could not start ("" when it runs).
    [[nodiscard]] const std::string& error() const noexcept { return error_; }
    /// Returns its TCP port on 127.0.0.1.
    [[nodiscard]] int port() const noexcept { return port_; }
    /// Returns a libpq conninfo for `dbname` through PgBouncer, as `user` with `password`.
    [[nodiscard]] std::string conninfo(const std::string& dbname, const std::string& user = PgServer::user,
                                       const std::string& password = PgServer::password) const {
        return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user + " password=" + password +
               " dbname=" + dbname;
    }
    /// Returns its log so far (for failure messages).
    [[nodiscard]] std::string log() const { return dir_.empty() ? std::string() : slurp(dir_ / "pgbouncer.log"); }

private:
    static std::string binary() {
        if (const char* path = std::getenv("CONNPOOL_PGBOUNCER"); path != nullptr && *path != '\0') return path;
        return "/usr/sbin/pgbouncer";
    }

    /// Returns the auth_file: every login role's SCRAM verifier, as the server keeps it.
    static std::string userlist(const PgServer& server) {
        PGconn* conn = PQconnectdb(server.conninfo().c_str());
        std::string out, why;
        if (PQstatus(conn) != CONNECTION_OK) {
            why = PQerrorMessage(conn);
        } else {
            PGresult* r = PQexec(conn, "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin AND "
                                       "rolpassword LIKE 'SCRAM-SHA-256$%'");
            if (PQresultStatus(r) != PGRES_TUPLES_OK) why = PQresultErrorMessage(r);
            for (int i = 0; why.empty() && i < PQntuples(r); ++i)
                out += "\"" + std::string(PQgetvalue(r, i, 0)) + "\" \"" + PQgetvalue(r, i, 1) + "\"\n";
            PQclear(r);
        }
        PQfinish(conn);
        if (!why.empty()) throw std::runtime_error("cannot read the server's SCRAM verifiers: " + why);
        return out;
    }

    void start_or_throw() {
        const PgServer& server = PgServer::instance();
        if (!server.error().empty()) throw std::runtime_error("the PostgreSQL test server is down: " + server.error());
        if (::access(binary().c_str(), X_OK) != 0)
            throw std::runtime_error("no " + binary() + " (Debian: apt-get install pgbouncer; or set CONNPOOL_PGBOUNCER)");
        std::string pattern = (std::filesystem::temp_directory_path() / "connpool-pgbouncer-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
        dir_ = pattern;
        const bool root = ::geteuid() == 0;
        const passwd* pw = root ? ::getpwnam("postgres") : nullptr;
        if (root && pw == nullptr) throw std::runtime_error("running as root and there is no 'postgres' user for pgbouncer");
        const uid_t uid = root ? pw->pw_uid : ::geteuid();
        const gid_t gid = root ? pw->pw_gid : ::getegid();
        const auto owned_file = [&](const std::filesystem::path& path, const std::string& text) {
            std::ofstream(path) << text;
            ::chmod(path.c_str(), 0600);
            if (root && ::chown(path.c_str(), uid, gid) != 0)
                throw std::runtime_error("chown " + path.string() + ": " + std::strerror(errno));
        };
        if (root && ::chown(dir_.c_str(), uid, gid) != 0)
            throw std::runtime_error("chown " + dir_.string() + ": " + std::strerror(errno));
        ::chmod(dir_.c_str(), 0755); // the test reads the log
        owned_file(dir_ / "userlist.txt", userlist(server));
        owned_file(dir_ / "pgbouncer.log", "");
        ::chmod((dir_ / "pgbouncer.log").c_str(), 0644);

        for (int attempt = 0; attempt < 3; ++attempt) {
            port_ = free_loopback_port();
            if (port_ < 0) throw std::runtime_error("no free loopback port");
            owned_file(dir_ / "pgbouncer.ini",
                       "[databases]\n* = host=127.0.0.1 port=" + std::to_string(server.port()) +
                           "\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " + std::to_string(port_) +
                           "\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = " + (dir_ / "userlist.txt").string() +
                           "\npool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 40\n"
                           "ignore_startup_parameters = extra_float_digits\nserver_reset_query = DISCARD ALL\n"
                           "admin_users = " + std::string(PgServer::user) + "\n"
                           "logfile = " + (dir_ / "pgbouncer.log").string() + "\npidfile = " +
                           (dir_ / "pgbouncer.pid").string() + "\n");
            spawn(root, uid, gid);
            if (wait_ready()) return;
            stop_process();
        }
        throw std::runtime_error("pgbouncer did not start:\n" + log());
    }

    /// Forks and execs pgbouncer in the foreground, as the postgres user when we are root; only
    /// async-signal-safe calls between fork and exec.
    void spawn(bool root, uid_t uid, gid_t gid) {
        const std::string exe = binary();
        const std::string ini = (dir_ / "pgbouncer.ini").string();
        const std::string out = (dir_ / "pgbouncer.log").string();
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
        if (pid == 0) {
            if (root && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) ::_exit(126);
            ::prctl(PR_SET_PDEATHSIG, SIGTERM); // the test died: so does pgbouncer
            if (::getppid() != parent) ::_exit(125);
            const int fd = ::open(out.c_str(), O_WRONLY | O_APPEND);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
            }
            const char* argv[] = {exe.c_str(), ini.c_str(), nullptr};
            ::execv(exe.c_str(), const_cast<char* const*>(argv));
            ::_exit(127);
        }
        pid_ = pid;
    }

    /// Waits until it accepts TCP connections (true) or exits or 10 s pass (false).
    bool wait_ready() {
        for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
             std::chrono::steady_clock::now() < until;) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return false;
            }
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            addr.sin_port = htons(static_cast<std::uint16_t>(port_));
            const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
            ::close(fd);
            if (up) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return false;
    }

    void stop_process() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM); // immediate shutdown: clients are disconnected
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
    }

    void stop() {
        stop_process();
        if (!dir_.empty() && error_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
        } else if (!dir_.empty()) {
            std::fprintf(stderr, "pgbouncer's directory kept for inspection: %s\n", dir_.c_str());
        }
        dir_.clear();
    }

    std::filesystem::path dir_;
    int port_ = -1;
    pid_t pid_ = -1;
    std::string error_;
};

/// For a test: a running PgBouncer `b`, or (it could not start) a failure on CI and a skip elsewhere.
#define CONNPOOL_REQUIRE_PGBOUNCER(b)                                                              \
    do {                                                                                           \
        if (const auto& why = (b).error(); !why.empty()) {                                         \
            if (std::getenv("CI") != nullptr) FAIL() << "PgBouncer could not start: " << why;       \
            GTEST_SKIP() << "PgBouncer could not start (apt-get install pgbouncer): " << why;       \
        }                                                                                          \
    } while (false)

} // namespace connpool::testing
