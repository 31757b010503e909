#pragma once

// MySQL's table backup file: what backup_table writes and restore_table checks before it touches
// anything. The framing, compression, checksum and trailer are the adapters' shared format
// (io/table_file_format.hpp); this file adds the magic "connpool-mysql-table 1", the header's
// MySQL fields (TableFileHeader) and the rows in LOAD DATA's default text format (load_data.hpp):
//
//   connpool-mysql-table 1\n
//   {"table":...,"columns":[...],"server_version":...,"charset":"utf8mb4",...}\n
//   <rows: fields tab-separated, lines newline-terminated, backslash escapes, \N for NULL>
//   END <rows:20> <bytes:20> <xxh3:16>\n

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../io/table_file.hpp"

namespace connpool::mysql {

/// How a table backup's data is compressed (none, or zstd frames with zstd's content checksum).
using Compression = io::Compression;

/// One column of a backed-up table.
struct ColumnInfo {
    /// The column's name as written.
    std::string name;
    /// Its type as information_schema.COLUMNS.COLUMN_TYPE spells it (e.g. "decimal(65,30)",
    /// "datetime(6)", "int(10) unsigned"): restore compares it with the target's.
    std::string type;
    friend bool operator==(const ColumnInfo&, const ColumnInfo&) = default;
};

/// What a MySQL table backup file's header records.
struct TableFileHeader {
    /// The file format this library writes and reads.
    static constexpr int current_format_version = 1;
    /// The database the table was in and its name, as written.
    std::string database, table;
    /// The columns copied, in order (generated columns are left out: the server computes them).
    std::vector<ColumnInfo> columns;
    /// The server's version (VERSION(), e.g. "10.11.6-MariaDB-0+deb12u1") and its number.
    std::string server_version;
    std::uint64_t server_version_num = 0;
    /// The character set the text is in: always utf8mb4 (the session's).
    std::string charset = "utf8mb4";
    /// The session time zone TIMESTAMP values were read in: always "+00:00", so they round-trip.
    std::string time_zone = "+00:00";
    /// Compression of the data.
    Compression compression = Compression::none;
};

namespace detail {

/// The magic and version of MySQL table files.
inline constexpr io::TableFileFormat table_file_format{"connpool-mysql-table", TableFileHeader::current_format_version};

/// The name of the data's text format in the header.
inline constexpr const char* load_data_text = "load-data-text";

inline std::string file_quoted(const std::filesystem::path& p) { return io::detail::quoted(p); }

/// Returns the header's MySQL fields (the writer adds format, version, compression, checksum).
inline nlohmann::json header_json(const TableFileHeader& h) {
    nlohmann::json columns = nlohmann::json::array();
    for (const auto& c : h.columns) columns.push_back({{"name", c.name}, {"type", c.type}});
    return {{"database", h.database},
            {"table", h.table},
            {"columns", columns},
            {"server_version", h.server_version},
            {"server_version_num", h.server_version_num},
            {"charset", h.charset},
            {"time_zone", h.time_zone},
            {"data_format", load_data_text}};
}

/// Starts a MySQL table file in `fd` (named `path` in errors); zstd at `zstd_level` if asked.
inline io::TableFileWriter table_file_writer(int fd, std::filesystem::path path, const TableFileHeader& header,
                                             int zstd_level) {
    return io::TableFileWriter(fd, std::move(path), table_file_format, header_json(header), header.compression,
                               zstd_level);
}

/// A MySQL table file opened for reading: its header, and the shared reader for its data.
class TableFileReader {
public:
    /// Opens `path` and reads its header and trailer; throws io::Error naming the file and what is
    /// wrong (missing, empty, not a MySQL table backup, another format version, no trailer).
    explicit TableFileReader(std::filesystem::path path)
        : reader_(std::move(path), table_file_format,
                  [this](const nlohmann::json& doc, const io::TableFileReader& r) { return parse_header(doc, r); }) {
        header_.compression = reader_.compression();
    }

    /// Returns the header.
    [[nodiscard]] const TableFileHeader& header() const noexcept { return header_; }
    /// Returns the shared reader: rows(), data_bytes(), read_data(), a Pass over the data.
    [[nodiscard]] io::TableFileReader& data() noexcept { return reader_; }
    /// Returns the file's path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return reader_.path(); }

private:
    io::RowFraming parse_header(const nlohmann::json& doc, const io::TableFileReader& r) {
        header_.database = doc.at("database").get<std::string>();
        header_.table = doc.at("table").get<std::string>();
        for (const auto& c : doc.at("columns"))
            header_.columns.push_back({c.at("name").get<std::string>(), c.at("type").get<std::string>()});
        header_.server_version = doc.at("server_version").get<std::string>();
        header_.server_version_num = doc.at("server_version_num").get<std::uint64_t>();
        header_.charset = doc.at("charset").get<std::string>();
        header_.time_zone = doc.at("time_zone").get<std::string>();
        const std::string format = doc.at("data_format").get<std::string>();
        if (format != load_data_text) r.refuse("its header names an unknown data format '" + format + "'");
        if (header_.charset != "utf8mb4") r.refuse("its header names the character set '" + header_.charset + "', not utf8mb4");
        // Newlines inside values are escaped (\n), so every row ends in exactly one.
        return io::RowFraming::lines;
    }

    TableFileHeader header_; // before reader_: filled while reader_ is constructed
    io::TableFileReader reader_;
};

} // namespace detail
} // namespace connpool::mysql
