#pragma once

// Table names: taken as written (no case folding, no parsing of dots) and always quoted with
// libpq's PQescapeIdentifier when they go into SQL, so any name works.

#include <string>
#include <utility>

#include <libpq-fe.h>

#include "error.hpp"

namespace connpool::postgres {

/// A table: schema and name exactly as written (case, quotes, dots and spaces are part of them).
struct Table {
    /// `public.name`.
    Table(std::string table_name) : schema("public"), name(std::move(table_name)) {} // NOLINT: Table{"orders"}
    /// `schema_name.table_name`.
    Table(std::string schema_name, std::string table_name)
        : schema(std::move(schema_name)), name(std::move(table_name)) {}
    /// The schema ("public" unless given).
    std::string schema;
    /// The table's name.
    std::string name;

    /// Returns `"schema"."name"` quoted as SQL writes it, for messages and job names.
    [[nodiscard]] std::string display() const {
        auto q = [](const std::string& s) {
            std::string out = "\"";
            for (const char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
            return out + "\"";
        };
        return q(schema) + "." + q(name);
    }

    friend bool operator==(const Table&, const Table&) = default;
};

namespace detail {

/// Returns `text` quoted by libpq's `escape` (PQescapeIdentifier or PQescapeLiteral) for `conn`'s
/// encoding, or throws Error.
inline std::string escaped(PGconn* conn, const std::string& text, char* (*escape)(PGconn*, const char*, size_t)) {
    char* quoted = escape(conn, text.data(), text.size());
    if (quoted == nullptr) throw Error("cannot quote for SQL: " + trimmed(PQerrorMessage(conn)), "");
    std::string out = quoted;
    PQfreemem(quoted);
    return out;
}

/// Returns `identifier` quoted by libpq for `conn` (its encoding), or throws Error.
inline std::string quote_identifier(PGconn* conn, const std::string& identifier) {
    return escaped(conn, identifier, PQescapeIdentifier);
}

/// Returns `text` quoted by libpq as a string literal for `conn`, or throws Error.
inline std::string quote_literal(PGconn* conn, const std::string& text) { return escaped(conn, text, PQescapeLiteral); }

/// Returns the table's qualified name quoted for SQL on `conn`.
inline std::string qualified(PGconn* conn, const Table& table) {
    return quote_identifier(conn, table.schema) + "." + quote_identifier(conn, table.name);
}

} // namespace detail
} // namespace connpool::postgres
