#pragma once

// mysql_backup's command line, on CLI11 (as postgres_backup's). A bad command line exits with
// status 2 and a one-line reason. The password never comes from argv: it is read from MYSQL_PWD
// or --password-file, and nothing here ever prints it.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include <CLI/CLI.hpp>

#include "../common/monitoring.hpp"
#include <connpool/monitor/redact.hpp> // redact: no password in a message
#include <connpool/mysql/options.hpp>

namespace mydemo {

/// What the command line asked for.
struct Settings : examples::MonitoringFlags { // --json-lines, --metrics-file, --serve, --linger
    connpool::mysql::ConnectOptions connect;    ///< where the database to back up is (holds the password: never print it)
    std::filesystem::path out = "mysql-backup"; ///< the backup set's directory (new or empty)
    int jobs = 2;                               ///< tables copied at once; the pool has jobs + 1 connections
    std::string restore_into;                   ///< with --restore-into: an empty database on the same server
    bool compress = true;                       ///< zstd (level 1) or none
    bool definers_mine = false;                 ///< --definers current-user: the restoring user defines the objects
};

inline constexpr std::string_view description =
    R"(Backs up every table of a MySQL or MariaDB database at once through a connection pool: one
consistent snapshot (as mydumper takes it), the schema with views, triggers and routines, one
file per table, a manifest written last. With --restore-into it then restores the set into
another (empty) database on the same server.)";

inline constexpr std::string_view footer =
    R"(The password is read from the environment variable MYSQL_PWD, or from the first line of
--password-file; never from the command line, and it is never printed. The user needs SELECT,
LOCK TABLES, RELOAD (for FLUSH TABLES WITH READ LOCK), SHOW VIEW and TRIGGER on the source, and
the server local_infile=1 for a restore (it loads with LOAD DATA LOCAL INFILE).
Exit status: 0 if everything succeeded; 1 if anything failed; 2 for a bad option; 130 when
interrupted (Ctrl-C cancels the jobs; no half-written file is left under its final name).)";

using examples::whole_number;

/// Returns `text` with every occurrence of `secret` masked (for messages that may echo it).
inline std::string mask(std::string text, const std::string& secret) {
    if (secret.empty()) return text;
    for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3))
        text.replace(at, secret.size(), connpool::monitor::redacted);
    return text;
}

/// Returns the password: the first line of `file` when given, else MYSQL_PWD, else "" (none).
/// Throws std::runtime_error (without the file's contents) when the file cannot be read.
inline std::string read_password(const std::string& file) {
    if (file.empty()) {
        const char* env = std::getenv("MYSQL_PWD");
        return env != nullptr ? env : "";
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read --password-file '" + file + "'");
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

/// Parses the command line. Returns the settings, or the exit status when the program should
/// stop now (0 after --help, 2 after a bad command line, with the reason on stderr).
inline std::variant<Settings, int> parse_command_line(int argc, char** argv) {
    Settings s;
    auto& c = s.connect;
    const char* login = std::getenv("USER");
    c.user = login != nullptr ? login : "";
    CLI::App app{std::string(description), "mysql_backup"};
    app.footer(std::string(footer));
    app.add_option("database", c.database, "the database to back up")->type_name("DATABASE")->required();
    app.add_option("--host,-H", c.host, "the server's host name or address (TCP)")->capture_default_str();
    app.add_option("--port,-P", c.port, "the server's TCP port")->check(whole_number(1, 65535))->capture_default_str();
    app.add_option("--user,-u", c.user, "the user to log in as (default: the login name, as the mysql client)")
        ->type_name("NAME");
    app.add_option("--socket,-S", c.unix_socket, "connect through this unix socket instead of TCP (--host and --port unused)")
        ->type_name("PATH");
    std::string password_file;
    app.add_option("--password-file", password_file, "read the password from the first line of PATH instead of MYSQL_PWD")
        ->type_name("PATH");
    app.add_option("--out", s.out, "the backup set's directory; it must not exist or be empty")
        ->type_name("DIR")
        ->capture_default_str();
    app.add_option("--jobs,-j", s.jobs, "tables copied at once (the pool holds JOBS + 1 connections)")
        ->check(whole_number(1, 64))
        ->capture_default_str();
    app.add_option("--restore-into", s.restore_into, "then restore the set into this empty database on the same server")
        ->type_name("DATABASE");
    std::string definers = "keep";
    app.add_option("--definers", definers,
                   "whose rights the restored views, triggers, routines and events run with: the set's DEFINERs "
                   "(keep; another account's needs SET USER) or the restoring user's (current-user)")
        ->check(CLI::IsMember({"keep", "current-user"}))
        ->capture_default_str();
    std::string compression = "zstd";
    app.add_option("--compression", compression, "compression of the table files")
        ->check(CLI::IsMember({"zstd", "none"}))
        ->capture_default_str();
    std::string serve;
    examples::add_monitoring_flags(app, s, serve);
    // The password is not on the command line, but someone may have put it there by mistake
    // (say `--password SECRET`): mask MYSQL_PWD's value and anything that looks like one.
    const char* env_password = std::getenv("MYSQL_PWD");
    const std::string env_secret = env_password != nullptr ? env_password : "";
    if (const auto end = examples::parse_or_exit(app, argc, argv, "mysql_backup", [&](const std::string& m) {
            return mask(connpool::monitor::redact(m), env_secret);
        }))
        return *end;
    s.compress = compression == "zstd";
    s.definers_mine = definers == "current-user";
    if (const std::string error = examples::finish_monitoring_flags(app, s, serve); !error.empty())
        return examples::usage_error("mysql_backup", error);
    if (c.user.empty()) return examples::usage_error("mysql_backup", "no --user, and USER is not set");
    if (!s.restore_into.empty() && s.restore_into == c.database)
        return examples::usage_error("mysql_backup", "--restore-into names the database being backed up");
    try {
        c.password = read_password(password_file);
    } catch (const std::runtime_error& e) {
        return examples::usage_error("mysql_backup", e.what());
    }
    return s;
}

} // namespace mydemo
