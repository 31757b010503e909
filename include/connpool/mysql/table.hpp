#pragma once

// mysql::Table: a table of the connection's database, named as written (no case folding, no
// parsing of dots) and always quoted with backticks when it goes into SQL, so any name works.

#include <string>
#include <utility>

#include "connection.hpp" // quote_identifier

namespace connpool::mysql {

/// A table in the connection's database (ConnectOptions::database): its name exactly as written
/// (case, quotes, backticks, dots, spaces and semicolons are part of it).
struct Table {
    /// The table named `table_name`.
    Table(std::string table_name) : name(std::move(table_name)) {} // NOLINT: Table{"orders"}
    /// The table's name.
    std::string name;

    /// Returns the name quoted as SQL writes it (`name`, backticks doubled), for SQL, messages and
    /// job names. Throws std::invalid_argument for a name MySQL cannot have (empty, a NUL byte).
    [[nodiscard]] std::string quoted() const { return quote_identifier(name); }

    friend bool operator==(const Table&, const Table&) = default;
};

} // namespace connpool::mysql
