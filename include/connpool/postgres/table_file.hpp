#pragma once

// PostgreSQL's table backup file: what backup_table writes and restore_table checks before it
// touches anything. The framing, compression, checksum and trailer are the adapters' shared
// format (io/table_file_format.hpp); this file adds the magic "connpool-pg-table 1", the header's
// PostgreSQL fields (TableFileHeader) and the COPY data, as the server sent it:
//
//   connpool-pg-table 1\n
//   {"schema":...,"columns":[...],"copy_format":...,...}\n
//   <COPY data, zstd-compressed or raw>
//   END <rows:20> <bytes:20> <xxh3:16>\n

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../io/table_file.hpp"

namespace connpool::postgres {

/// The COPY format of a table backup.
enum class CopyFormat {
    /// PostgreSQL's text format: portable across server versions and architectures (default).
    text,
    /// PostgreSQL's binary format: faster for some types, but tied to the types' binary I/O.
    binary,
};

/// How a table backup's data is compressed (none, or zstd frames with zstd's content checksum).
using Compression = io::Compression;

/// One column of a backed-up table.
struct ColumnInfo {
    /// The column's name as written.
    std::string name;
    /// Its type as format_type() spells it (e.g. "numeric(10,2)", "text[]").
    std::string type;
    friend bool operator==(const ColumnInfo&, const ColumnInfo&) = default;
};

/// What a table backup file's header records.
struct TableFileHeader {
    /// The file format this library writes and reads.
    static constexpr int current_format_version = 1;
    /// The table's schema and name, as written.
    std::string schema, table;
    /// The columns copied, in order.
    std::vector<ColumnInfo> columns;
    /// The server's version (server_version) and its number (server_version_num).
    std::string server_version;
    int server_version_num = 0;
    /// The encoding the data is in (the server's, e.g. "UTF8").
    std::string encoding;
    /// COPY format and compression of the data.
    CopyFormat format = CopyFormat::text;
    Compression compression = Compression::none;
};

namespace detail {

/// The magic and version of PostgreSQL table files.
inline constexpr io::TableFileFormat table_file_format{"connpool-pg-table", TableFileHeader::current_format_version};

inline std::string file_quoted(const std::filesystem::path& p) { return io::detail::quoted(p); }

/// Returns the header's PostgreSQL fields (the writer adds format, version, compression, checksum).
inline nlohmann::json header_json(const TableFileHeader& h) {
    nlohmann::json columns = nlohmann::json::array();
    for (const auto& c : h.columns) columns.push_back({{"name", c.name}, {"type", c.type}});
    return {{"schema", h.schema},
            {"table", h.table},
            {"columns", columns},
            {"server_version", h.server_version},
            {"server_version_num", h.server_version_num},
            {"encoding", h.encoding},
            {"copy_format", h.format == CopyFormat::text ? "text" : "binary"}};
}

/// Streams a PostgreSQL table file into a descriptor: buffered, hashed, compressed. One thread.
class TableFileWriter : public io::TableFileWriter {
public:
    /// Writes the magic and header to `fd` (named `path` in errors); zstd at `level` if asked.
    TableFileWriter(int fd, std::filesystem::path path, const TableFileHeader& header, int zstd_level)
        : io::TableFileWriter(fd, std::move(path), table_file_format, header_json(header), header.compression,
                              zstd_level) {}
};

/// Reads a PostgreSQL table file: the header at once (refusing a file that is not one), then the
/// COPY data as often as asked, each pass checking the checksum and the counts. One thread.
class TableFileReader {
public:
    /// Opens `path` and reads its header and trailer; throws io::Error naming the file and what is
    /// wrong (missing, empty, not a table backup, another format version, no trailer).
    explicit TableFileReader(std::filesystem::path path)
        : reader_(std::move(path), table_file_format,
                  [this](const nlohmann::json& doc, const io::TableFileReader& r) { return parse_header(doc, r); }) {
        header_.compression = reader_.compression();
    }

    /// Returns the header.
    [[nodiscard]] const TableFileHeader& header() const noexcept { return header_; }
    /// Returns the row count and COPY data size the trailer records.
    [[nodiscard]] std::uint64_t rows() const noexcept { return reader_.rows(); }
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return reader_.data_bytes(); }

    /// Reads the whole file, giving the COPY data to `sink` in chunks (when sink returns false
    /// the pass stops and returns false); throws io::Error when the checksum, the size of the data
    /// or (text format) its row count differ from the trailer's, or the compressed data is damaged.
    bool read_data(const std::function<bool(const char*, std::size_t)>& sink) { return reader_.read_data(sink); }

    /// Returns the file's path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return reader_.path(); }

private:
    io::RowFraming parse_header(const nlohmann::json& doc, const io::TableFileReader& r) {
        header_.schema = doc.at("schema").get<std::string>();
        header_.table = doc.at("table").get<std::string>();
        for (const auto& c : doc.at("columns"))
            header_.columns.push_back({c.at("name").get<std::string>(), c.at("type").get<std::string>()});
        header_.server_version = doc.at("server_version").get<std::string>();
        header_.server_version_num = doc.at("server_version_num").get<int>();
        header_.encoding = doc.at("encoding").get<std::string>();
        const std::string format = doc.at("copy_format").get<std::string>();
        if (format != "text" && format != "binary") r.refuse("its header names an unknown COPY format '" + format + "'");
        header_.format = format == "text" ? CopyFormat::text : CopyFormat::binary;
        // In text format every row ends in one newline (newlines in values are escaped); binary
        // rows cannot be counted from the bytes.
        return header_.format == CopyFormat::text ? io::RowFraming::lines : io::RowFraming::opaque;
    }

    TableFileHeader header_; // before reader_: filled while reader_ is constructed
    io::TableFileReader reader_;
};

} // namespace detail
} // namespace connpool::postgres
