#pragma once

// The Factory that opens pooled MySQL/MariaDB connections and keeps them fit for reuse. A program
// that only pools MySQL connections needs this header and nothing of the job layer.
//
// Connection lifecycle as the pool drives it: create() connects (blocking, bounded by
// FactoryOptions::connect_timeout) with utf8mb4 and auto-reconnect off (a silent reconnect
// would lose the session's state: its transaction, temporary tables, variables, locks), then
// runs init_sql; validate() pings an idle connection before it is handed out (after
// PoolOptions::validate_after_idle) and so notices one the server closed (KILL CONNECTION,
// wait_timeout, a restart); reset() runs when a lease comes back and puts the session back as
// create() left it (mysql_reset_connection: rolls back, drops temporary tables, user variables
// and session settings) or, failing that, retires it.

#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>

#include <mysql.h>

#include "connection.hpp"
#include "error.hpp"
#include "options.hpp"

namespace connpool::mysql {

namespace detail {

/// Initialises Connector/C once per process, before any thread's first mysql_init (which would
/// otherwise do it without a lock). Throws Error if it cannot.
inline void library_init() {
    static const bool ok = mysql_library_init(0, nullptr, nullptr) == 0;
    if (!ok) throw Error("cannot initialise MariaDB Connector/C (mysql_library_init failed)", 0, "");
}

/// Sets one Connector/C option, naming it when the library refuses.
template <class T>
inline void set_option(MYSQL* mysql, mysql_option option, const T* value, const char* name) {
    if (mysql_optionsv(mysql, option, value) != 0)
        throw Error(std::string("connpool::mysql::Factory: Connector/C refused option ") + name, 0, "");
}

inline void set_string_option(MYSQL* mysql, mysql_option option, const std::string& value, const char* name) {
    if (!value.empty()) set_option(mysql, option, value.c_str(), name);
}

} // namespace detail

/// Creates Connections to one server and database, for Pool. Thread-safe: only reads its own state.
class Factory {
public:
    /// A factory for `connect` with `options`. Throws std::invalid_argument (never with the
    /// password) when an option is out of range.
    explicit Factory(ConnectOptions connect, FactoryOptions options = {})
        : connect_(std::move(connect)), options_(std::move(options)) {
        auto check = [](std::chrono::seconds s, const char* field, long long min) {
            if (s.count() < min || s.count() > 24 * 3600)
                throw std::invalid_argument(std::string("connpool::mysql::FactoryOptions: ") + field + " must be between " +
                                            std::to_string(min) + " and 86400 s, got " + std::to_string(s.count()));
        };
        check(options_.connect_timeout, "connect_timeout", 1);
        check(options_.read_timeout, "read_timeout", 0);
        check(options_.write_timeout, "write_timeout", 0);
        if (connect_.unix_socket.empty() && connect_.host.empty())
            throw std::invalid_argument("connpool::mysql::ConnectOptions: neither host nor unix_socket is set");
        if (connect_.unix_socket.empty() && (connect_.port == 0 || connect_.port > 65535))
            throw std::invalid_argument("connpool::mysql::ConnectOptions: port must be between 1 and 65535, got " +
                                        std::to_string(connect_.port));
    }

    /// Connects and runs init_sql; throws Error saying where and why (the client's or server's
    /// reason, error number and SQLSTATE; the password masked) on failure.
    [[nodiscard]] Connection create() const {
        detail::library_init();
        detail::MysqlPtr mysql(mysql_init(nullptr));
        if (!mysql) throw Error("cannot connect to " + where() + ": out of memory (mysql_init)", 2008, "HY000");
        configure(mysql.get());
        const bool socket = !connect_.unix_socket.empty();
        if (mysql_real_connect(mysql.get(), socket ? nullptr : connect_.host.c_str(), connect_.user.c_str(),
                               connect_.password.c_str(), connect_.database.empty() ? nullptr : connect_.database.c_str(),
                               socket ? 0 : connect_.port, socket ? connect_.unix_socket.c_str() : nullptr,
                               CLIENT_MULTI_STATEMENTS) == nullptr)
            detail::throw_last(mysql.get(), "cannot connect to " + where(), connect_.password);
        Connection connection(mysql.release(), where(), connect_.password);
        if (!options_.init_sql.empty()) {
            try {
                connection.exec(options_.init_sql);
            } catch (const Error& e) {
                throw Error(scrub(std::string("setting up a new connection failed (FactoryOptions::init_sql): ") + e.what()),
                            e.code(), e.sqlstate());
            }
        }
        return connection;
    }

    /// Returns whether an idle connection is still alive: it answers a ping (one round trip;
    /// auto-reconnect is off, so a connection the server closed fails instead of reconnecting).
    [[nodiscard]] bool validate(Connection& connection) const noexcept { return mysql_ping(connection.handle()) == 0; }

    /// Makes a returned connection reusable. With FactoryOptions::reset_connection (the default):
    /// mysql_reset_connection (rolls back an open transaction; drops temporary tables, user
    /// variables and prepared statements; releases table locks and GET_LOCK locks; session
    /// variables back to the server's defaults, the character set back to utf8mb4), then
    /// init_sql and reset_sql. Without it: rolls back an open transaction, then reset_sql.
    /// Returns false (retire it) when any step fails, e.g. the server closed the connection.
    [[nodiscard]] bool reset(Connection& connection) const noexcept {
        MYSQL* mysql = connection.handle();
        try {
            if (options_.reset_connection) {
                if (mysql_reset_connection(mysql) != 0) return false;
                // MariaDB puts the handshake's character set back; MySQL servers may use their
                // default, so say utf8mb4 again there (the client's escaping assumes it).
                if (!connection.is_mariadb() && mysql_set_character_set(mysql, "utf8mb4") != 0) return false;
                if (!options_.init_sql.empty()) connection.exec(options_.init_sql);
            } else if (connection.in_transaction()) {
                if (mysql_rollback(mysql) != 0) return false;
            }
            if (!options_.reset_sql.empty()) connection.exec(options_.reset_sql);
            return !connection.in_transaction();
        } catch (...) {
            return false;
        }
    }

    /// Returns "database 'x' on host:port as 'user'", for messages (never the password).
    [[nodiscard]] std::string where() const { return connect_.where(); }

    /// Returns `text` with this factory's password masked (for messages built from the client's).
    [[nodiscard]] std::string scrub(std::string text) const { return detail::scrub(std::move(text), connect_.password); }

    /// Returns where and as whom this factory connects (it holds the password: never print it).
    [[nodiscard]] const ConnectOptions& connect_options() const noexcept { return connect_; }

    /// Returns the options.
    [[nodiscard]] const FactoryOptions& options() const noexcept { return options_; }

private:
    void configure(MYSQL* mysql) const {
        const unsigned int connect_timeout = static_cast<unsigned int>(options_.connect_timeout.count());
        detail::set_option(mysql, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout, "MYSQL_OPT_CONNECT_TIMEOUT");
        if (options_.read_timeout.count() > 0) {
            const unsigned int t = static_cast<unsigned int>(options_.read_timeout.count());
            detail::set_option(mysql, MYSQL_OPT_READ_TIMEOUT, &t, "MYSQL_OPT_READ_TIMEOUT");
        }
        if (options_.write_timeout.count() > 0) {
            const unsigned int t = static_cast<unsigned int>(options_.write_timeout.count());
            detail::set_option(mysql, MYSQL_OPT_WRITE_TIMEOUT, &t, "MYSQL_OPT_WRITE_TIMEOUT");
        }
        detail::set_option(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4", "MYSQL_SET_CHARSET_NAME");
        const my_bool reconnect = 0;
        detail::set_option(mysql, MYSQL_OPT_RECONNECT, &reconnect, "MYSQL_OPT_RECONNECT");
        const unsigned int local_infile = options_.local_infile ? 1U : 0U;
        detail::set_option(mysql, MYSQL_OPT_LOCAL_INFILE, &local_infile, "MYSQL_OPT_LOCAL_INFILE");
        const unsigned int protocol = connect_.unix_socket.empty() ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET;
        detail::set_option(mysql, MYSQL_OPT_PROTOCOL, &protocol, "MYSQL_OPT_PROTOCOL");
        if (mysql_optionsv(mysql, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "connpool") != 0)
            throw Error("connpool::mysql::Factory: Connector/C refused option MYSQL_OPT_CONNECT_ATTR_ADD", 0, "");
        const TlsOptions& tls = options_.tls;
        if (tls.enforce) {
            const my_bool on = 1;
            detail::set_option(mysql, MYSQL_OPT_SSL_ENFORCE, &on, "MYSQL_OPT_SSL_ENFORCE");
        }
        if (tls.verify_server_cert) {
            const my_bool on = 1;
            detail::set_option(mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on, "MYSQL_OPT_SSL_VERIFY_SERVER_CERT");
        }
        detail::set_string_option(mysql, MYSQL_OPT_SSL_KEY, tls.key, "MYSQL_OPT_SSL_KEY");
        detail::set_string_option(mysql, MYSQL_OPT_SSL_CERT, tls.cert, "MYSQL_OPT_SSL_CERT");
        detail::set_string_option(mysql, MYSQL_OPT_SSL_CA, tls.ca, "MYSQL_OPT_SSL_CA");
        detail::set_string_option(mysql, MYSQL_OPT_SSL_CAPATH, tls.capath, "MYSQL_OPT_SSL_CAPATH");
        detail::set_string_option(mysql, MYSQL_OPT_SSL_CIPHER, tls.cipher, "MYSQL_OPT_SSL_CIPHER");
        detail::set_string_option(mysql, MYSQL_OPT_SSL_CRL, tls.crl, "MYSQL_OPT_SSL_CRL");
    }

    ConnectOptions connect_;
    FactoryOptions options_;
};

} // namespace connpool::mysql
