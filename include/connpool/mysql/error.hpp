#pragma once

// The MySQL adapter's error type, the RAII handles the adapter uses (connection, result) and how
// a failure reported by MariaDB Connector/C becomes an Error: the operation and where it ran
// (given by the caller; never the password), the client's or server's message, its error number
// and SQLSTATE.

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <mysql.h>

#include "../detail/scrub.hpp"
#include "../errors.hpp"

namespace connpool::mysql {

/// A failure reported by Connector/C or the server: what() names the operation and the server
/// and gives its message with "(error N, SQLSTATE S)"; code() is the error number (server
/// ER_* >= 1000, client CR_* >= 2000; 0 when neither said one), sqlstate() the SQLSTATE ("" when
/// none). A message never contains a password.
class Error : public connpool::Error {
public:
    /// Builds the error from the full message, the error number and the SQLSTATE.
    Error(const std::string& message, unsigned int code, std::string sqlstate)
        : connpool::Error(message), code_(code), sqlstate_(std::move(sqlstate)) {}

    /// Returns the error number, e.g. 1317 (ER_QUERY_INTERRUPTED) or 2013 (CR_SERVER_LOST); 0 if none.
    [[nodiscard]] unsigned int code() const noexcept { return code_; }
    /// Returns the five-character SQLSTATE, e.g. "70100" (query interrupted); "" when there is none.
    [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

private:
    unsigned int code_;
    std::string sqlstate_;
};

/// Error numbers the adapter and its users act on.
namespace errc {
/// ER_QUERY_INTERRUPTED: the statement was killed (KILL QUERY, e.g. by CancelOnStop).
inline constexpr unsigned int query_interrupted = 1317;
/// ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout expired waiting for a row lock.
inline constexpr unsigned int lock_wait_timeout = 1205;
/// ER_LOCK_DEADLOCK: the transaction was chosen as a deadlock victim and rolled back.
inline constexpr unsigned int lock_deadlock = 1213;
/// ER_STATEMENT_TIMEOUT (MariaDB max_statement_time) / ER_QUERY_TIMEOUT (MySQL max_execution_time).
inline constexpr unsigned int statement_timeout = 1969;
/// CR_SERVER_GONE_ERROR: the server closed the connection (before the statement was sent).
inline constexpr unsigned int server_gone = 2006;
/// CR_SERVER_LOST: the connection broke during a statement.
inline constexpr unsigned int server_lost = 2013;
} // namespace errc

namespace detail {

using connpool::detail::redacted;
using connpool::detail::scrub;

/// Closes a connection handle when it goes out of scope.
struct CloseMysql {
    void operator()(MYSQL* mysql) const noexcept { mysql_close(mysql); }
};
using MysqlPtr = std::unique_ptr<MYSQL, CloseMysql>;

/// Frees a result set (reading out what is left of an unbuffered one) when it goes out of scope.
struct FreeResult {
    void operator()(MYSQL_RES* result) const noexcept { mysql_free_result(result); }
};
using ResultPtr = std::unique_ptr<MYSQL_RES, FreeResult>;

/// Returns " (error N, SQLSTATE S)" (the SQLSTATE left out when there is none).
[[nodiscard]] inline std::string codes(unsigned int code, const std::string& sqlstate) {
    return " (error " + std::to_string(code) + (sqlstate.empty() || sqlstate == "00000" ? "" : ", SQLSTATE " + sqlstate) + ")";
}

/// Returns `mysql`'s last error as an Error: "<context>: <message> (error N, SQLSTATE S)", with
/// `secret` (the password) masked.
[[nodiscard]] inline Error last_error(MYSQL* mysql, const std::string& context, std::string_view secret = {}) {
    const unsigned int code = mysql_errno(mysql);
    std::string sqlstate = mysql_sqlstate(mysql);
    if (sqlstate == "00000") sqlstate.clear();
    std::string message = mysql_error(mysql);
    if (message.empty()) message = "(Connector/C gave no message)";
    std::string text = scrub(context + ": " + message + codes(code, sqlstate), secret); // before sqlstate is moved
    return Error(text, code, std::move(sqlstate));
}

/// Throws `mysql`'s last error (see last_error).
[[noreturn]] inline void throw_last(MYSQL* mysql, const std::string& context, std::string_view secret = {}) {
    throw last_error(mysql, context, secret);
}

} // namespace detail
} // namespace connpool::mysql
