#pragma once

// The table backup file every adapter writes and checks, whatever the database:
//
//   <name> <version>\n                            magic and format version ("connpool-pg-table 1")
//   {"format":...,"format_version":...,...}\n     header: one line of JSON, the adapter's fields
//                                                 plus format, format_version, compression, checksum
//   <data>                                        the adapter's rows (PostgreSQL COPY text or
//                                                 binary, MySQL LOAD DATA text), zstd or raw
//   END <rows:20> <bytes:20> <xxh3:16>\n          trailer, fixed length (trailer_size)
//
// The XXH3-64 covers every byte before its own 16 hex digits (magic, header, data, counts), so a
// changed, truncated or grown file is refused; `bytes` is the size of the data before
// compression and `rows` the number of rows, both checked again when the data is read back (the
// rows only where each row ends in one newline, RowFraming::lines).
//
// What differs between adapters is the magic and the header's own fields; the framing, the
// compression, the checksum, the trailer and the refusals are here, so a file's integrity means
// the same thing for every database.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "durable_file.hpp" // io::Error, detail::quoted

namespace connpool::io {

/// How a table backup's data is compressed.
enum class Compression {
    /// Stored as the database sent it.
    none,
    /// zstd frames (with zstd's own content checksum), Debian's libzstd.
    zstd,
};

/// Whether the reader can count a file's rows in its data, as a check beside the checksum.
enum class RowFraming {
    /// Every row ends in exactly one '\n' and no '\n' occurs inside a row (escaped text formats).
    lines,
    /// Rows cannot be counted from the bytes (binary formats): only the data size is checked.
    opaque,
};

/// An adapter's table file format: the magic's name and the version this library writes and
/// reads. The magic line is "<name> <version>\n".
struct TableFileFormat {
    /// The format's name, e.g. "connpool-pg-table"; also the header's "format" field.
    std::string_view name;
    /// The format version (one digit: it is part of the fixed-length magic).
    int version = 1;

    /// Returns the magic line, e.g. "connpool-pg-table 1\n".
    [[nodiscard]] std::string magic() const { return std::string(name) + " " + std::to_string(version) + "\n"; }
};

namespace detail {

/// "END " + 20 digits + " " + 20 digits + " " + 16 hex digits + "\n".
inline constexpr std::size_t table_trailer_size = 4 + 20 + 1 + 20 + 1 + 16 + 1;
/// The hex digits and newline at the end of the trailer: the only bytes the checksum leaves out.
inline constexpr std::size_t table_digest_size = 16 + 1;
/// A header line longer than this is refused (a file that is not one, or a damaged one).
inline constexpr std::size_t max_table_header_size = 16u << 20;

/// Returns the name a compression has in the header.
[[nodiscard]] inline const char* compression_name(Compression c) noexcept {
    return c == Compression::zstd ? "zstd" : "none";
}

} // namespace detail
} // namespace connpool::io
