#pragma once

// A pooled MySQL/MariaDB connection (MariaDB Connector/C): statements, small queries whose rows
// come back as text cells (NULL distinct from ""), identifier and string quoting. Made by
// mysql::Factory (factory.hpp). Link connpool::mysql.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <mysql.h>

#include "error.hpp"

namespace connpool::mysql {

/// One cell of a query's row in text form (MySQL's text protocol): std::nullopt is SQL NULL,
/// "" the empty string; binary values are kept byte for byte.
using Cell = std::optional<std::string>;

/// The rows of a query's first result set, buffered.
struct Rows {
    /// The columns' names (their aliases), in order.
    std::vector<std::string> columns{};
    /// The rows, each with one cell per column.
    std::vector<std::vector<Cell>> rows{};

    /// Returns the number of rows.
    [[nodiscard]] std::size_t size() const noexcept { return rows.size(); }
    /// Returns whether there is no row.
    [[nodiscard]] bool empty() const noexcept { return rows.empty(); }
    /// Returns row `i` (unchecked).
    [[nodiscard]] const std::vector<Cell>& operator[](std::size_t i) const noexcept { return rows[i]; }
};

/// Returns `name` as a MySQL identifier: in backticks, a backtick inside doubled, so any name
/// (quotes, spaces, semicolons, backticks) is taken as it is written. Throws std::invalid_argument
/// for an empty name or one with a NUL byte, which MySQL cannot name.
[[nodiscard]] inline std::string quote_identifier(std::string_view name) {
    if (name.empty()) throw std::invalid_argument("connpool::mysql::quote_identifier: an identifier cannot be empty");
    std::string out;
    out.reserve(name.size() + 2);
    out += '`';
    for (const char c : name) {
        if (c == '\0')
            throw std::invalid_argument("connpool::mysql::quote_identifier: an identifier cannot contain a NUL byte");
        if (c == '`') out += '`';
        out += c;
    }
    out += '`';
    return out;
}

/// One pooled MySQL/MariaDB connection: owns a `MYSQL*` (closed on destruction). Move-only; like
/// any leased connection, used by one thread at a time. Its session speaks utf8mb4.
class Connection {
public:
    /// Adopts `mysql`, which must be connected; `where` describes it for messages (no password),
    /// `secret` is masked in every message this connection builds. Made by Factory.
    Connection(MYSQL* mysql, std::string where, std::string secret = {}) noexcept
        : mysql_(mysql), where_(std::move(where)), secret_(std::move(secret)) {}

    /// Returns the raw handle, for any Connector/C call. Do not close it.
    [[nodiscard]] MYSQL* handle() const noexcept { return mysql_.get(); }

    /// Returns "database 'x' on host:port as 'user'", for messages (never the password).
    [[nodiscard]] const std::string& where() const noexcept { return where_; }

    /// Runs `sql` (one statement, or several separated by ';') and reads and drops every result,
    /// so the connection is ready for the next statement. Throws Error with the server's message
    /// (the failing statement's; those after it are not run).
    void exec(std::string_view sql) {
        send(sql, "SQL");
        drain(nullptr, "SQL");
    }

    /// Runs `sql` and returns its first result set's rows (buffered in memory: for small results;
    /// stream large ones with mysql_use_result on handle()). Later result sets are read and
    /// dropped. A statement without a result set gives no columns and no rows. Throws Error.
    [[nodiscard]] Rows query(std::string_view sql) {
        send(sql, "query");
        Rows rows;
        drain(&rows, "query");
        return rows;
    }

    /// Returns the first column of the first row of `sql` (nothing for NULL or no row). Throws Error.
    [[nodiscard]] Cell query_value(std::string_view sql) {
        Rows r = query(sql);
        if (r.rows.empty() || r.rows.front().empty()) return std::nullopt;
        return std::move(r.rows.front().front());
    }

    /// Returns `text` escaped for a string literal with mysql_real_escape_string (the session's
    /// character set and sql_mode NO_BACKSLASH_ESCAPES respected), without the quotes.
    [[nodiscard]] std::string escape_string(std::string_view text) const {
        std::string out(text.size() * 2 + 1, '\0');
        const unsigned long n = mysql_real_escape_string(handle(), out.data(), text.data(), text.size());
        if (n == static_cast<unsigned long>(-1))
            throw Error("escaping a string literal on " + where_ + " failed: the text is not valid in the session's character set",
                        0, "");
        out.resize(n);
        return out;
    }

    /// Returns `text` as a SQL string literal: '...' with escape_string inside.
    [[nodiscard]] std::string quote_string(std::string_view text) const { return "'" + escape_string(text) + "'"; }

    /// Returns `name` quoted as an identifier (see connpool::mysql::quote_identifier).
    [[nodiscard]] static std::string quote_identifier(std::string_view name) { return mysql::quote_identifier(name); }

    /// Returns the server's id for this session (what KILL and the process list use).
    [[nodiscard]] unsigned long thread_id() const noexcept { return mysql_thread_id(handle()); }

    /// Returns the server's version string, e.g. "10.11.6-MariaDB-0+deb12u1".
    [[nodiscard]] std::string server_version() const { return mysql_get_server_info(handle()); }

    /// Returns the server's version as a number: major * 10000 + minor * 100 + patch.
    [[nodiscard]] unsigned long server_version_number() const noexcept { return mysql_get_server_version(handle()); }

    /// Returns whether the server is MariaDB (else MySQL or a fork of it).
    [[nodiscard]] bool is_mariadb() const noexcept { return mariadb_connection(handle()) != 0; }

    /// Returns whether a transaction is open, as the server's last reply said.
    [[nodiscard]] bool in_transaction() const noexcept {
        unsigned int status = 0;
        mariadb_get_infov(handle(), MARIADB_CONNECTION_SERVER_STATUS, &status);
        return (status & SERVER_STATUS_IN_TRANS) != 0;
    }

    /// Returns the number of rows the last statement changed, matched or returned (mysql_affected_rows).
    [[nodiscard]] std::uint64_t affected_rows() const noexcept { return mysql_affected_rows(handle()); }

    /// Returns `text` with this connection's password masked.
    [[nodiscard]] std::string scrub(std::string text) const { return detail::scrub(std::move(text), secret_); }

private:
    void send(std::string_view sql, const char* what) {
        if (mysql_real_query(handle(), sql.data(), sql.size()) != 0)
            detail::throw_last(handle(), std::string(what) + " on " + where_ + " failed", secret_);
    }

    /// Reads every result of the statements just sent; the first result set goes to `first`.
    void drain(Rows* first, const char* what) {
        bool captured = first == nullptr;
        for (;;) {
            detail::ResultPtr result(mysql_store_result(handle()));
            if (result) {
                if (!captured) {
                    read_rows(result.get(), *first);
                    captured = true;
                }
            } else if (mysql_field_count(handle()) != 0) {
                detail::throw_last(handle(), std::string(what) + " on " + where_ + " failed reading its result", secret_);
            }
            const int next = mysql_next_result(handle());
            if (next < 0) return;
            if (next > 0) detail::throw_last(handle(), std::string(what) + " on " + where_ + " failed", secret_);
        }
    }

    static void read_rows(MYSQL_RES* result, Rows& out) {
        const unsigned int n = mysql_num_fields(result);
        const MYSQL_FIELD* fields = mysql_fetch_fields(result);
        out.columns.reserve(n);
        for (unsigned int i = 0; i < n; ++i) out.columns.emplace_back(fields[i].name, fields[i].name_length);
        out.rows.reserve(static_cast<std::size_t>(mysql_num_rows(result)));
        while (MYSQL_ROW row = mysql_fetch_row(result)) {
            const unsigned long* lengths = mysql_fetch_lengths(result);
            std::vector<Cell>& cells = out.rows.emplace_back();
            cells.reserve(n);
            for (unsigned int i = 0; i < n; ++i) {
                if (row[i] == nullptr)
                    cells.emplace_back(std::nullopt);
                else
                    cells.emplace_back(std::in_place, row[i], lengths[i]);
            }
        }
    }

    detail::MysqlPtr mysql_;
    std::string where_;
    std::string secret_;
};

} // namespace connpool::mysql
