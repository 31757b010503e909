#pragma once

// LOAD DATA's default text format, which table backups store and restores feed back through
// `LOAD DATA LOCAL INFILE`: fields separated by a tab, rows ended by a newline, and inside a
// field a backslash escaping the bytes that would break that framing (\t, \n, \\, and \0 for
// NUL; \r is escaped too, so no tool reading the file as lines can lose it); `\N` is NULL, an
// empty field the empty string. Every byte value survives (a BLOB's included), and a newline
// occurs only at the end of a row, so the rows can be counted from the bytes.
//
// LocalInfileSource serves such data to the server from a table file while a LOAD DATA LOCAL
// statement runs, through Connector/C's mysql_set_local_infile_handler: whatever file name the
// statement carries, the client reads only the stream it was given.

#include <array>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <mysql.h>

#include "../io/table_file_reader.hpp"
#include "connection.hpp" // quote_identifier
#include "table_file.hpp" // ColumnInfo

namespace connpool::mysql::detail {

/// The escape each byte needs in a field (0: none), e.g. '\t' -> 't'.
inline constexpr std::array<char, 256> load_data_escapes = [] {
    std::array<char, 256> e{};
    e[static_cast<unsigned char>('\0')] = '0';
    e[static_cast<unsigned char>('\t')] = 't';
    e[static_cast<unsigned char>('\n')] = 'n';
    e[static_cast<unsigned char>('\r')] = 'r';
    e[static_cast<unsigned char>('\\')] = '\\';
    return e;
}();

/// Appends one row (`n` fields, as mysql_fetch_row and mysql_fetch_lengths give them; a null
/// pointer is SQL NULL) to `out` in LOAD DATA's text format, newline included.
inline void append_load_data_row(std::string& out, const char* const* fields, const unsigned long* lengths,
                                 unsigned int n) {
    for (unsigned int i = 0; i < n; ++i) {
        if (i > 0) out += '\t';
        const char* p = fields[i];
        if (p == nullptr) {
            out += "\\N";
            continue;
        }
        const char* const end = p + lengths[i];
        // Runs without special bytes (nearly everything) are appended whole.
        const char* run = p;
        for (; p != end; ++p) {
            const char e = load_data_escapes[static_cast<unsigned char>(*p)];
            if (e == 0) continue;
            out.append(run, static_cast<std::size_t>(p - run));
            out += '\\';
            out += e;
            run = p + 1;
        }
        out.append(run, static_cast<std::size_t>(end - run));
    }
    out += '\n';
}

/// Returns "(`a`,`b`)" for the columns, for SELECT and LOAD DATA.
inline std::string column_list(const std::vector<ColumnInfo>& columns) {
    std::string out = "(";
    for (const auto& c : columns) out += (out.size() > 1 ? "," : "") + quote_identifier(c.name);
    return out + ")";
}

/// Returns the LOAD DATA LOCAL statement that reads this format into `quoted_table`'s `columns`.
/// The file name is only a label: LocalInfileSource serves the data.
inline std::string load_data_sql(const std::string& quoted_table, const std::vector<ColumnInfo>& columns) {
    return "LOAD DATA LOCAL INFILE 'connpool-table-backup' INTO TABLE " + quoted_table +
           " CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' " +
           column_list(columns);
}

/// Serves a table file's data to the LOAD DATA LOCAL statement run while it is installed on a
/// connection (mysql_set_local_infile_handler), checking it as it goes (io::TableFileReader::Pass);
/// uninstalls itself on destruction. `each_chunk` is called with every chunk's size before it
/// is sent and returns false to stop (the statement then fails, and the caller rolls back).
class LocalInfileSource {
public:
    /// Installs the handler on `mysql` for one statement over `reader`'s data.
    LocalInfileSource(MYSQL* mysql, io::TableFileReader& reader, std::function<bool(std::size_t)> each_chunk)
        : mysql_(mysql), pass_(reader), each_chunk_(std::move(each_chunk)) {
        mysql_set_local_infile_handler(mysql_, &init, &read, &end, &error, this);
    }
    /// Puts Connector/C's default handler back.
    ~LocalInfileSource() { mysql_set_local_infile_default(mysql_); }
    LocalInfileSource(const LocalInfileSource&) = delete;
    LocalInfileSource& operator=(const LocalInfileSource&) = delete;

    /// Returns what made the stream fail (the file's io::Error, say), or null.
    [[nodiscard]] std::exception_ptr failure() const noexcept { return failure_; }
    /// Returns whether each_chunk asked to stop.
    [[nodiscard]] bool stopped() const noexcept { return stopped_; }
    /// Returns whether the server asked for the data at all.
    [[nodiscard]] bool started() const noexcept { return started_; }
    /// Returns whether the data was served to its end and checked out.
    [[nodiscard]] bool finished() const noexcept { return finished_; }

private:
    static int init(void** ptr, const char*, void* userdata) {
        *ptr = userdata;
        static_cast<LocalInfileSource*>(userdata)->started_ = true;
        return 0;
    }

    // C callbacks: nothing may be thrown through Connector/C, so failures are kept for the caller.
    static int read(void* ptr, char* buf, unsigned int buf_len) {
        auto* self = static_cast<LocalInfileSource*>(ptr);
        try {
            if (self->left_.empty()) {
                if (self->finished_) return 0;
                self->left_ = self->pass_.next(); // throws at the end if the file does not check out
                if (self->left_.empty()) {
                    self->finished_ = true;
                    return 0;
                }
                if (!self->each_chunk_(self->left_.size())) {
                    self->stopped_ = true;
                    self->left_ = {};
                    return -1;
                }
            }
            const std::size_t n = std::min<std::size_t>(buf_len, self->left_.size());
            std::memcpy(buf, self->left_.data(), n);
            self->left_.remove_prefix(n);
            return static_cast<int>(n);
        } catch (...) {
            self->failure_ = std::current_exception();
            return -1;
        }
    }

    static void end(void*) {}

    static int error(void* ptr, char* buf, unsigned int buf_len) {
        auto* self = static_cast<LocalInfileSource*>(ptr);
        std::string why = self->stopped_ ? "restore cancelled" : "the backup file failed while it was read";
        if (self->failure_) {
            try {
                std::rethrow_exception(self->failure_);
            } catch (const std::exception& e) {
                why = e.what();
            } catch (...) {
            }
        }
        if (buf_len > 0) {
            const std::size_t n = std::min<std::size_t>(why.size(), buf_len - 1);
            std::memcpy(buf, why.data(), n);
            buf[n] = '\0';
        }
        return 2000; // CR_UNKNOWN_ERROR: the client's own failure, not the server's
    }

    MYSQL* mysql_;
    io::TableFileReader::Pass pass_;
    std::function<bool(std::size_t)> each_chunk_;
    std::string_view left_{};
    std::exception_ptr failure_{};
    bool stopped_ = false, started_ = false, finished_ = false;
};

} // namespace connpool::mysql::detail
