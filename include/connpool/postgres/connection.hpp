#pragma once

// A pooled PostgreSQL connection and the Factory that opens them. This is all a program that only
// pools PostgreSQL connections needs: it includes neither the job layer nor connpool::io.
// Link connpool::postgres (it brings libpq).
//
// Connection lifecycle as the pool drives it: create() connects (blocking, bounded by
// FactoryOptions::connect_timeout); validate() runs on an idle connection before it is handed
// out (after PoolOptions::validate_after_idle) and notices one the server closed; reset() runs
// when a lease comes back and rolls back what it left open; a connection still busy with a
// query or COPY is never reused.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <poll.h> // poll: is the server's socket readable (it closed or sent something)?

#include <libpq-fe.h>

#include "error.hpp"

namespace connpool::postgres {

/// The rows of a query's result (owns the PGresult). Move-only.
class Result {
public:
    /// Adopts `result`.
    explicit Result(detail::ResultPtr result) noexcept : result_(std::move(result)) {}

    /// Returns the raw result, for any libpq call. Do not clear it.
    [[nodiscard]] PGresult* handle() const noexcept { return result_.get(); }
    /// Returns the number of rows.
    [[nodiscard]] int rows() const noexcept { return PQntuples(result_.get()); }
    /// Returns the number of columns.
    [[nodiscard]] int columns() const noexcept { return PQnfields(result_.get()); }
    /// Returns whether the value at (row, column) is NULL.
    [[nodiscard]] bool is_null(int row, int column) const noexcept {
        return PQgetisnull(result_.get(), row, column) != 0;
    }
    /// Returns the value at (row, column) in text form ("" for NULL; see is_null).
    [[nodiscard]] std::string get(int row, int column) const {
        return std::string(PQgetvalue(result_.get(), row, column),
                           static_cast<std::size_t>(PQgetlength(result_.get(), row, column)));
    }
    /// Returns the value at (row, column), or nothing for NULL.
    [[nodiscard]] std::optional<std::string> value(int row, int column) const {
        if (is_null(row, column)) return std::nullopt;
        return get(row, column);
    }
    /// Returns the number of rows the command affected (PQcmdTuples; 0 when it says nothing).
    [[nodiscard]] std::uint64_t affected() const {
        const char* n = PQcmdTuples(result_.get());
        return (n != nullptr && *n != '\0') ? std::stoull(n) : 0;
    }

private:
    detail::ResultPtr result_;
};

/// A query parameter in text form; std::nullopt is SQL NULL.
using Param = std::optional<std::string>;

namespace detail {

inline void ignore_notice(void*, const char*) noexcept {}

/// Returns whether `status` is a successful end of a command.
inline bool ok(ExecStatusType status) noexcept {
    return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY;
}

} // namespace detail

/// One pooled PostgreSQL connection: owns a `PGconn*` (closed on destruction). Move-only; like
/// any leased connection, used by one thread at a time.
class Connection {
public:
    /// Adopts `conn`, which must be connected; made by Factory.
    explicit Connection(PGconn* conn) noexcept : conn_(conn) {}

    /// Returns the raw handle, for any libpq call. Do not finish it.
    [[nodiscard]] PGconn* handle() const noexcept { return conn_.get(); }

    /// Returns "database 'x' on host:port as 'user'", for messages (never the password).
    [[nodiscard]] std::string where() const { return detail::where(conn_.get()); }

    /// Runs `sql` (one or more statements, no parameters); returns the last statement's result.
    /// Throws Error with the server's message on failure.
    Result exec(const std::string& sql) {
        detail::ResultPtr result(PQexec(handle(), sql.c_str()));
        if (!result || !detail::ok(PQresultStatus(result.get())))
            detail::throw_result(handle(), result.get(), "SQL on " + where() + " failed");
        return Result(std::move(result));
    }

    /// Runs one statement with parameters $1, $2, ... given in text form (NULL as std::nullopt), so
    /// values never need quoting. Throws Error with the server's message on failure.
    Result query(const std::string& sql, const std::vector<Param>& params) {
        std::vector<const char*> values;
        values.reserve(params.size());
        for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
        detail::ResultPtr result(PQexecParams(handle(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                                              values.data(), nullptr, nullptr, 0));
        if (!result || !detail::ok(PQresultStatus(result.get())))
            detail::throw_result(handle(), result.get(), "query on " + where() + " failed");
        return Result(std::move(result));
    }

    /// Returns the first column of the first row of `sql` with `params` (nothing for NULL or no row).
    std::optional<std::string> query_value(const std::string& sql, const std::vector<Param>& params = {}) {
        const Result r = query(sql, params);
        if (r.rows() == 0 || r.columns() == 0) return std::nullopt;
        return r.value(0, 0);
    }

    /// Returns whether a transaction is open (in progress or failed).
    [[nodiscard]] bool in_transaction() const noexcept {
        const auto s = PQtransactionStatus(handle());
        return s == PQTRANS_INTRANS || s == PQTRANS_INERROR;
    }

private:
    detail::ConnPtr conn_;
};

/// How a Factory opens connections. Every field has a default.
struct FactoryOptions {
    /// How long connecting may take (libpq's connect_timeout, whole seconds, at least 2). Default 10 s.
    std::chrono::seconds connect_timeout{10};
    /// The application_name the sessions show in pg_stat_activity; overrides the conninfo's
    /// unless empty. Default "connpool".
    std::string application_name = "connpool";
    /// SQL run by reset() after a returned lease's transaction is rolled back, e.g. "DISCARD ALL"
    /// or "RESET ALL". Default none.
    std::string reset_sql{};
    /// SQL run once on every new connection (e.g. "SET statement_timeout = '5min'"). Default none.
    std::string init_sql{};
    /// validate() sends an empty query and waits for its answer (a round trip: catches a server
    /// that went away without closing the socket). Default true; false = only look at the socket.
    bool ping = true;
};

/// Creates Connections to one server and database, for Pool. Thread-safe: only reads its own state.
class Factory {
public:
    /// A factory for `conninfo` (libpq key=value or postgresql:// URI). Throws
    /// std::invalid_argument, without the password, when conninfo does not parse or an option is
    /// out of range.
    explicit Factory(std::string conninfo, FactoryOptions options = {})
        : conninfo_(std::move(conninfo)), options_(std::move(options)) {
        if (options_.connect_timeout.count() < 0)
            throw std::invalid_argument("connpool::postgres::FactoryOptions: connect_timeout must be >= 0 s, got " +
                                        std::to_string(options_.connect_timeout.count()));
        char* error = nullptr;
        PQconninfoOption* parsed = PQconninfoParse(conninfo_.c_str(), &error);
        if (parsed == nullptr) {
            std::string message = error != nullptr ? detail::trimmed(error) : std::string("out of memory");
            PQfreemem(error);
            throw std::invalid_argument("connpool::postgres::Factory: the connection string does not parse: " +
                                        mask_quoted(message));
        }
        for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o)
            if (o->val != nullptr && std::string_view(o->keyword) == "password") password_ = o->val;
        PQconninfoFree(parsed);
    }

    /// Connects; throws Error saying where and why (libpq's reason, password masked) on failure.
    [[nodiscard]] Connection create() const {
        const std::string timeout = std::to_string(options_.connect_timeout.count());
        std::vector<const char*> keys{"dbname", "connect_timeout"};
        std::vector<const char*> values{conninfo_.c_str(), timeout.c_str()};
        if (!options_.application_name.empty()) {
            keys.push_back("application_name");
            values.push_back(options_.application_name.c_str());
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        detail::ConnPtr conn(PQconnectdbParams(keys.data(), values.data(), 1));
        if (!conn) throw Error("cannot connect to PostgreSQL: out of memory", "");
        if (PQstatus(conn.get()) != CONNECTION_OK)
            throw Error(scrub("cannot connect to " + detail::where(conn.get()) + ": " +
                              detail::trimmed(PQerrorMessage(conn.get()))),
                        "08001");
        PQsetNoticeProcessor(conn.get(), detail::ignore_notice, nullptr);
        Connection connection(conn.release());
        if (!options_.init_sql.empty()) {
            try {
                connection.exec(options_.init_sql);
            } catch (const Error& e) {
                throw Error(scrub(std::string("setting up a new connection failed (FactoryOptions::init_sql): ") +
                                  e.what()),
                            e.sqlstate());
            }
        }
        return connection;
    }

    /// Returns whether an idle connection is still alive: its socket has no end-of-file or error
    /// waiting (what a server that terminated the session leaves), and, with FactoryOptions::ping,
    /// it answers an empty query. Never blocks longer than one round trip.
    [[nodiscard]] bool validate(Connection& connection) const noexcept {
        PGconn* conn = connection.handle();
        if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE) return false;
        // Something readable on an idle session is a FATAL the server sent before closing (libpq
        // takes it for a notice and stays OK) or the close itself, which only a read notices.
        for (int reads = 0;; ++reads) {
            pollfd pfd{PQsocket(conn), POLLIN, 0};
            if (pfd.fd < 0) return false;
            if (::poll(&pfd, 1, 0) <= 0) break;
            if ((pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) return false;
            if (PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK || reads == 8) return false;
        }
        if (!options_.ping) return true;
        detail::ResultPtr result(PQexec(conn, ""));
        return result && PQresultStatus(result.get()) == PGRES_EMPTY_QUERY && PQstatus(conn) == CONNECTION_OK;
    }

    /// Makes a returned connection reusable: rolls back an open or failed transaction, then runs
    /// FactoryOptions::reset_sql. Returns false (retire it) for a connection still in a query or
    /// COPY, one the server closed, or when either statement fails.
    [[nodiscard]] bool reset(Connection& connection) const noexcept {
        PGconn* conn = connection.handle();
        if (PQstatus(conn) != CONNECTION_OK) return false;
        switch (PQtransactionStatus(conn)) {
        case PQTRANS_IDLE: break;
        case PQTRANS_INTRANS:
        case PQTRANS_INERROR: {
            detail::ResultPtr result(PQexec(conn, "ROLLBACK"));
            if (!result || PQresultStatus(result.get()) != PGRES_COMMAND_OK) return false;
            break;
        }
        default: return false; // a command in flight (PQTRANS_ACTIVE) or a broken link
        }
        if (options_.reset_sql.empty()) return true;
        detail::ResultPtr result(PQexec(conn, options_.reset_sql.c_str()));
        return result && detail::ok(PQresultStatus(result.get())) && PQtransactionStatus(conn) == PQTRANS_IDLE;
    }

    /// Returns `text` with this factory's password masked (for messages built from libpq's).
    [[nodiscard]] std::string scrub(std::string text) const { return detail::scrub(std::move(text), password_); }

    /// Returns the options.
    [[nodiscard]] const FactoryOptions& options() const noexcept { return options_; }

    /// Returns the connection string (it may hold the password: never print it).
    [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }

private:
    /// libpq's parse errors quote a piece of the string, which may be (part of) the password.
    static std::string mask_quoted(std::string message) {
        std::string out;
        bool inside = false;
        for (const char c : message) {
            if (c == '"') {
                out += c;
                if (!inside) out += detail::redacted;
                inside = !inside;
            } else if (!inside) {
                out += c;
            }
        }
        return out;
    }

    std::string conninfo_;
    FactoryOptions options_;
    std::string password_;
};

} // namespace connpool::postgres
