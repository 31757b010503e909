#pragma once

// Running pg_dump for a database backup's schema (the one tool that gets PostgreSQL's DDL right):
// found by option, on PATH, or beside the server's version in Debian's layout; its version
// checked against the server's; logged in with the leader connection's parameters, the password
// passed in the environment (never on the command line, where ps shows it) and kept out of
// every message.

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../io/durable_file.hpp"
#include "error.hpp"

extern char** environ; // posix_spawn's environment for the child

namespace connpool::postgres::detail {

/// Returns the pg_dump to run: `configured` when given, else the first pg_dump on PATH, else
/// Debian's /usr/lib/postgresql/<major>/bin/pg_dump; throws Error saying where it looked.
inline std::filesystem::path find_pg_dump(const std::filesystem::path& configured, int server_major) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!configured.empty()) {
        if (fs::is_regular_file(configured, ec)) return configured;
        throw Error("pg_dump not found at '" + configured.string() + "' (DatabaseBackupOptions::pg_dump)", "");
    }
    const fs::path debian = "/usr/lib/postgresql/" + std::to_string(server_major) + "/bin/pg_dump";
    if (fs::is_regular_file(debian, ec)) return debian; // matches the server's major version exactly
    if (const char* path = std::getenv("PATH"); path != nullptr) {
        std::string dirs = path;
        for (std::size_t start = 0; start <= dirs.size();) {
            const std::size_t end = std::min(dirs.find(':', start), dirs.size());
            const fs::path candidate = fs::path(dirs.substr(start, end - start)) / "pg_dump";
            if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
            start = end + 1;
        }
    }
    throw Error("pg_dump not found on PATH nor at " + debian.string() +
                    " (Debian: apt-get install postgresql-client; or set DatabaseBackupOptions::pg_dump)",
                "");
}

/// Runs `argv` with the leader connection's login in PG* variables, its stdout into `out_fd`
/// (-1: /dev/null); returns what it wrote to stderr, or throws Error when it fails (password
/// masked).
inline std::string run_tool(const std::vector<std::string>& argv, PGconn* login, int out_fd, const std::string& what) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e)
        if (std::strncmp(*e, "PG", 2) != 0) env_strings.emplace_back(*e); // ours replace any PG* the user set
    auto add = [&](const char* key, const char* value) {
        if (value != nullptr && *value != '\0') env_strings.push_back(std::string(key) + "=" + value);
    };
    add("PGHOST", PQhost(login));
    add("PGPORT", PQport(login));
    add("PGUSER", PQuser(login));
    add("PGDATABASE", PQdb(login));
    add("PGPASSWORD", PQpass(login));
    add("PGAPPNAME", "connpool");
    std::vector<char*> env;
    for (auto& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);

    char err_name[] = "/tmp/connpool-tool-XXXXXX";
    const int err_fd = ::mkostemp(err_name, O_CLOEXEC);
    if (err_fd < 0) io::detail::throw_errno(what + ": cannot create a file for the tool's messages", errno);
    ::unlink(err_name);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    }
    posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        ::close(err_fd);
        throw Error(what + ": cannot run '" + argv[0] + "': " + std::strerror(rc), "");
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string messages;
    char buffer[4096];
    for (off_t at = 0;;) {
        const ssize_t n = ::pread(err_fd, buffer, sizeof buffer, at);
        if (n <= 0) break;
        messages.append(buffer, static_cast<std::size_t>(n));
        at += n;
    }
    ::close(err_fd);
    const char* password = PQpass(login);
    messages = scrub(messages, password != nullptr ? password : "");
    while (!messages.empty() && messages.back() == '\n') messages.pop_back();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error(what + ": '" + argv[0] + "' failed (" +
                        (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                           : std::string("killed by a signal")) +
                        "): " + messages,
                    "");
    return messages;
}

/// Returns the major version of the pg_dump at `path` ("pg_dump (PostgreSQL) 15.20" -> 15).
inline int pg_dump_major(const std::filesystem::path& path, PGconn* login) {
    char out_name[] = "/tmp/connpool-tool-XXXXXX";
    const int out_fd = ::mkostemp(out_name, O_CLOEXEC);
    if (out_fd < 0) io::detail::throw_errno("cannot create a temp file", errno);
    ::unlink(out_name);
    run_tool({path.string(), "--version"}, login, out_fd, "checking pg_dump's version");
    char text[256] = {};
    const ssize_t n = ::pread(out_fd, text, sizeof text - 1, 0);
    ::close(out_fd);
    const std::string version(text, n > 0 ? static_cast<std::size_t>(n) : 0);
    const std::size_t at = version.find(") ");
    if (at == std::string::npos) throw Error("cannot read pg_dump's version from '" + version + "'", "");
    return std::atoi(version.c_str() + at + 2);
}

} // namespace connpool::postgres::detail
