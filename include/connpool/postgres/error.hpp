#pragma once

// The PostgreSQL adapter's error type, the RAII handles every part of it uses (connection,
// result, cancel object) and the one function that keeps passwords out of messages.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include "../detail/scrub.hpp"
#include "../errors.hpp"

namespace connpool::postgres {

/// A failure reported by libpq or the server: what() names the operation, the server or table,
/// and the server's message; sqlstate() is the SQLSTATE ("" when the failure is not the server's).
/// A message never contains a password.
class Error : public connpool::Error {
public:
    /// Builds the error from the full message and the SQLSTATE (e.g. "57014", "" if none).
    Error(const std::string& message, std::string sqlstate)
        : connpool::Error(message), sqlstate_(std::move(sqlstate)) {}

    /// Returns the five-character SQLSTATE, e.g. "57014" (query_canceled); "" when there is none.
    [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

private:
    std::string sqlstate_;
};

namespace detail {

// Shared with the other adapters (detail/scrub.hpp).
using connpool::detail::redacted;
using connpool::detail::scrub;

/// Returns `message` without its trailing newlines (libpq ends every message with one).
[[nodiscard]] inline std::string trimmed(const char* message) {
    std::string text = message != nullptr ? message : "";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text.empty() ? std::string("(libpq gave no message)") : text;
}

/// Finishes a connection when it goes out of scope.
struct FinishConn {
    void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
using ConnPtr = std::unique_ptr<PGconn, FinishConn>;

/// Clears a result when it goes out of scope.
struct ClearResult {
    void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ClearResult>;

/// Frees a cancel object when it goes out of scope.
struct FreeCancel {
    void operator()(PGcancel* cancel) const noexcept { PQfreeCancel(cancel); }
};
using CancelPtr = std::unique_ptr<PGcancel, FreeCancel>;

/// Returns where `conn` is connected, for messages: "db on host:port as user" (no password).
[[nodiscard]] inline std::string where(const PGconn* conn) {
    if (conn == nullptr) return "PostgreSQL";
    auto text = [](const char* s) { return std::string(s != nullptr ? s : "?"); };
    return "database '" + text(PQdb(conn)) + "' on " + text(PQhost(conn)) + ":" + text(PQport(conn)) + " as '" +
           text(PQuser(conn)) + "'";
}

/// Throws an Error for a failed `result` (or for `conn`'s last error when `result` is null).
[[noreturn]] inline void throw_result(PGconn* conn, const PGresult* result, const std::string& context) {
    std::string sqlstate;
    std::string message;
    if (result != nullptr) {
        const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
        sqlstate = state != nullptr ? state : "";
        message = trimmed(PQresultErrorMessage(result));
        if (message == "(libpq gave no message)") message = trimmed(PQerrorMessage(conn));
    } else {
        message = trimmed(PQerrorMessage(conn));
    }
    throw Error(context + ": " + message, std::move(sqlstate));
}

} // namespace detail
} // namespace connpool::postgres
