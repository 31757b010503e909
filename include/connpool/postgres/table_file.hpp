#pragma once

// The table backup file: what backup_table writes and restore_table checks before it touches
// anything.
//
//   connpool-pg-table 1\n                       magic and format version
//   {"schema":...,"columns":[...],...}\n        header: one line of JSON (TableFileHeader)
//   <COPY data>                                  as the server sent it, zstd-compressed or raw
//   END <rows:20> <bytes:20> <xxh3:16>\n         trailer, fixed length (trailer_size)
//
// The XXH3-64 covers every byte before its own 16 hex digits (magic, header, payload, counts),
// so a changed, truncated or grown file is refused; `bytes` is the size of the COPY data before
// compression and `rows` the number of rows, both checked again when the data is read back.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <zstd.h>

#include "../io/checksum.hpp" // XXH3 (inline), io::Error
#include "../io/durable_file.hpp"

namespace connpool::postgres {

/// The COPY format of a table backup.
enum class CopyFormat {
    /// PostgreSQL's text format: portable across server versions and architectures (default).
    text,
    /// PostgreSQL's binary format: faster for some types, but tied to the types' binary I/O.
    binary,
};

/// How a table backup's data is compressed.
enum class Compression {
    /// Stored as the server sent it.
    none,
    /// zstd frames (with zstd's own content checksum), Debian's libzstd.
    zstd,
};

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

inline constexpr std::string_view table_file_magic = "connpool-pg-table 1\n";
/// "END " + 20 digits + " " + 20 digits + " " + 16 hex digits + "\n".
inline constexpr std::size_t trailer_size = 4 + 20 + 1 + 20 + 1 + 16 + 1;
inline constexpr std::size_t max_header_size = 16u << 20;

inline std::string file_quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

inline nlohmann::json header_json(const TableFileHeader& h) {
    nlohmann::json columns = nlohmann::json::array();
    for (const auto& c : h.columns) columns.push_back({{"name", c.name}, {"type", c.type}});
    return {{"format", "connpool-pg-table"},
            {"format_version", TableFileHeader::current_format_version},
            {"schema", h.schema},
            {"table", h.table},
            {"columns", columns},
            {"server_version", h.server_version},
            {"server_version_num", h.server_version_num},
            {"encoding", h.encoding},
            {"copy_format", h.format == CopyFormat::text ? "text" : "binary"},
            {"compression", h.compression == Compression::zstd ? "zstd" : "none"},
            {"checksum", "xxh3-64"}};
}

/// Streams a table file into a descriptor: buffered, hashed, compressed. One thread.
class TableFileWriter {
public:
    /// Writes the magic and header to `fd` (named `path` in errors); zstd at `level` if asked.
    TableFileWriter(int fd, std::filesystem::path path, const TableFileHeader& header, int zstd_level)
        : fd_(fd), path_(std::move(path)), compress_(header.compression == Compression::zstd) {
        XXH3_64bits_reset(&hash_);
        if (compress_) {
            cctx_ = ZSTD_createCCtx();
            if (cctx_ == nullptr) throw io::Error("cannot compress " + file_quoted(path_) + ": out of memory", ENOMEM);
            ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, zstd_level);
            ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
        }
        raw(table_file_magic.data(), table_file_magic.size());
        const std::string text = header_json(header).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        raw(text.data(), text.size());
    }
    ~TableFileWriter() { ZSTD_freeCCtx(cctx_); }
    TableFileWriter(const TableFileWriter&) = delete;
    TableFileWriter& operator=(const TableFileWriter&) = delete;

    /// Adds `size` bytes of COPY data.
    void data(const char* bytes, std::size_t size) {
        data_bytes_ += size;
        if (!compress_) return raw(bytes, size);
        ZSTD_inBuffer in{bytes, size, 0};
        while (in.pos < in.size) compress(&in, ZSTD_e_continue);
    }

    /// Ends the data and writes the trailer with `rows`; the caller then fsyncs.
    void finish(std::uint64_t rows) {
        if (compress_) {
            ZSTD_inBuffer in{nullptr, 0, 0};
            while (compress(&in, ZSTD_e_end) != 0) {
            }
        }
        char counts[4 + 20 + 1 + 20 + 1 + 1];
        std::snprintf(counts, sizeof counts, "END %020llu %020llu ", static_cast<unsigned long long>(rows),
                      static_cast<unsigned long long>(data_bytes_));
        raw(counts, std::strlen(counts));
        flush(); // hashes the rest: the digest covers everything before it
        const std::string hex = io::to_hex(XXH3_64bits_digest(&hash_)) + "\n";
        write_all(hex.data(), hex.size());
    }

    /// Returns the COPY data bytes so far (before compression).
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }

private:
    std::size_t compress(ZSTD_inBuffer* in, ZSTD_EndDirective mode) {
        std::array<char, 1 << 16> out_buffer;
        ZSTD_outBuffer out{out_buffer.data(), out_buffer.size(), 0};
        const std::size_t left = ZSTD_compressStream2(cctx_, &out, in, mode);
        if (ZSTD_isError(left))
            throw io::Error("cannot compress " + file_quoted(path_) + ": " + ZSTD_getErrorName(left), EIO);
        raw(out_buffer.data(), out.pos);
        return left;
    }

    // Every byte before the digest is hashed, in file order, when it leaves the buffer: one
    // XXH3 update per megabyte instead of one per COPY row (~100 bytes), same digest.
    void raw(const char* bytes, std::size_t size) {
        if (buffer_.size() + size > capacity) flush();
        if (size >= capacity) {
            XXH3_64bits_update(&hash_, bytes, size);
            return write_all(bytes, size);
        }
        buffer_.insert(buffer_.end(), bytes, bytes + size);
    }

    void flush() {
        XXH3_64bits_update(&hash_, buffer_.data(), buffer_.size());
        write_all(buffer_.data(), buffer_.size());
        buffer_.clear();
    }

    void write_all(const char* bytes, std::size_t size) {
        while (size > 0) {
            const ssize_t n = ::write(fd_, bytes, size);
            if (n < 0) {
                if (errno == EINTR) continue;
                io::detail::throw_errno("cannot write " + file_quoted(path_), errno);
            }
            bytes += n;
            size -= static_cast<std::size_t>(n);
        }
    }

    static constexpr std::size_t capacity = 1 << 20;
    int fd_;
    std::filesystem::path path_;
    bool compress_;
    ZSTD_CCtx* cctx_ = nullptr;
    XXH3_state_t hash_{};
    std::vector<char> buffer_;
    std::uint64_t data_bytes_ = 0;
};

/// Reads a table file: the header at once (refusing a file that is not one), then the data as
/// often as asked, each pass checking the checksum and the counts. One thread.
class TableFileReader {
public:
    /// Opens `path` and reads its header and trailer; throws io::Error naming the file and what is
    /// wrong (missing, empty, not a table backup, another format version, no trailer).
    explicit TableFileReader(std::filesystem::path path) : path_(std::move(path)) {
        fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) io::detail::throw_errno("cannot read table backup " + file_quoted(path_), errno);
        struct stat st {};
        if (::fstat(fd_, &st) != 0) io::detail::throw_errno("cannot read table backup " + file_quoted(path_), errno);
        if (!S_ISREG(st.st_mode)) bad("it is not a regular file");
        size_ = static_cast<std::uint64_t>(st.st_size);
        if (size_ == 0) bad("the file is empty");
        const std::string start = read_at(0, std::min<std::uint64_t>(size_, max_header_size + table_file_magic.size()));
        if (start.compare(0, table_file_magic.size(), table_file_magic) != 0) {
            if (start.rfind("connpool-pg-table ", 0) == 0)
                bad("it has another format version (this library reads " + std::string(table_file_magic.substr(18, 1)) + ")");
            bad("it is not a connpool table backup (no 'connpool-pg-table' magic)");
        }
        const std::size_t end = start.find('\n', table_file_magic.size());
        if (end == std::string::npos) bad("its header is incomplete (the file is truncated)");
        const auto doc = nlohmann::json::parse(start.substr(table_file_magic.size(), end - table_file_magic.size()),
                                               nullptr, false);
        parse_header(doc);
        data_start_ = end + 1;
        if (size_ < data_start_ + trailer_size) bad("it has no trailer (the file is truncated)");
        const std::string trailer = read_at(size_ - trailer_size, trailer_size);
        unsigned long long rows = 0, bytes = 0;
        char hex[17] = {};
        if (trailer.compare(0, 4, "END ") != 0 || trailer.back() != '\n' ||
            std::sscanf(trailer.c_str(), "END %20llu %20llu %16[0-9a-f]", &rows, &bytes, hex) != 3 ||
            std::strlen(hex) != 16)
            bad("it has no valid trailer (the file is truncated or was changed)");
        rows_ = rows;
        data_bytes_ = bytes;
        xxh3_ = std::stoull(hex, nullptr, 16);
    }
    ~TableFileReader() {
        if (fd_ >= 0) ::close(fd_);
    }
    TableFileReader(const TableFileReader&) = delete;
    TableFileReader& operator=(const TableFileReader&) = delete;

    /// Returns the header.
    [[nodiscard]] const TableFileHeader& header() const noexcept { return header_; }
    /// Returns the row count and COPY data size the trailer records.
    [[nodiscard]] std::uint64_t rows() const noexcept { return rows_; }
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }

    /// Reads the whole file, giving the COPY data to `sink` in chunks (when sink returns false
    /// the pass stops and returns false); throws io::Error when the checksum, the size of the data
    /// or (text format) its row count differ from the trailer's, or the compressed data is damaged.
    bool read_data(const std::function<bool(const char*, std::size_t)>& sink) {
        XXH3_state_t hash{};
        XXH3_64bits_reset(&hash);
        std::uint64_t out_bytes = 0, newlines = 0;
        auto deliver = [&](const char* p, std::size_t n) {
            out_bytes += n;
            if (header_.format == CopyFormat::text)
                newlines += static_cast<std::uint64_t>(std::count(p, p + n, '\n')); // vectorised: a restore reads its file twice
            return sink(p, n);
        };
        ZSTD_DCtx* dctx = header_.compression == Compression::zstd ? ZSTD_createDCtx() : nullptr;
        struct FreeD {
            ZSTD_DCtx* d;
            ~FreeD() { ZSTD_freeDCtx(d); }
        } free_d{dctx};
        // Uninitialised and no larger than the file: a small table's check should not zero and
        // fault in a megabyte (it showed in the tiny-backup profile).
        const std::size_t in_size = static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, size_));
        const std::size_t out_size = ZSTD_DStreamOutSize();
        const std::unique_ptr<char[]> in_buffer(new char[in_size]);
        const std::unique_ptr<char[]> out_buffer(dctx != nullptr ? new char[out_size] : nullptr);
        std::uint64_t pos = 0;
        const std::uint64_t hashed_end = size_ - 17; // all but the hex digits and newline
        std::size_t last = 1;                       // zstd: 0 once a frame ended exactly
        while (pos < hashed_end) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(in_size, hashed_end - pos));
            read_exact(pos, in_buffer.get(), want);
            XXH3_64bits_update(&hash, in_buffer.get(), want);
            // Only the part before the trailer is data.
            const std::uint64_t data_end = size_ - trailer_size;
            std::size_t data_from = pos < data_start_ ? static_cast<std::size_t>(std::min<std::uint64_t>(data_start_ - pos, want)) : 0;
            std::size_t data_to = pos + want <= data_end ? want : static_cast<std::size_t>(data_end > pos ? data_end - pos : 0);
            if (data_to > data_from) {
                const char* p = in_buffer.get() + data_from;
                const std::size_t n = data_to - data_from;
                if (dctx == nullptr) {
                    if (!deliver(p, n)) return false;
                } else {
                    ZSTD_inBuffer zin{p, n, 0};
                    while (zin.pos < zin.size) {
                        ZSTD_outBuffer zout{out_buffer.get(), out_size, 0};
                        last = ZSTD_decompressStream(dctx, &zout, &zin);
                        if (ZSTD_isError(last)) bad(std::string("its compressed data is damaged (") + ZSTD_getErrorName(last) + ")");
                        if (zout.pos > 0 && !deliver(out_buffer.get(), zout.pos)) return false;
                    }
                }
            }
            pos += want;
        }
        if (dctx != nullptr && last != 0) bad("its compressed data ends in the middle of a frame");
        if (XXH3_64bits_digest(&hash) != xxh3_)
            bad("it does not match its checksum (xxh3 " + io::to_hex(XXH3_64bits_digest(&hash)) + ", the trailer says " +
                io::to_hex(xxh3_) + "): it was changed or damaged");
        if (out_bytes != data_bytes_)
            bad("its data has " + std::to_string(out_bytes) + " bytes; the trailer says " + std::to_string(data_bytes_));
        if (header_.format == CopyFormat::text && newlines != rows_)
            bad("its data has " + std::to_string(newlines) + " rows; the trailer says " + std::to_string(rows_));
        return true;
    }

    /// Returns the file's path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

private:
    [[noreturn]] void bad(const std::string& why) const {
        throw io::Error("table backup " + file_quoted(path_) + " is unusable: " + why, EINVAL);
    }

    void parse_header(const nlohmann::json& doc) {
        try {
            if (!doc.is_object()) bad("its header is not valid JSON");
            if (doc.value("format_version", 0) != TableFileHeader::current_format_version)
                bad("its header has another format version");
            header_.schema = doc.at("schema").get<std::string>();
            header_.table = doc.at("table").get<std::string>();
            for (const auto& c : doc.at("columns"))
                header_.columns.push_back({c.at("name").get<std::string>(), c.at("type").get<std::string>()});
            header_.server_version = doc.at("server_version").get<std::string>();
            header_.server_version_num = doc.at("server_version_num").get<int>();
            header_.encoding = doc.at("encoding").get<std::string>();
            const std::string format = doc.at("copy_format").get<std::string>();
            const std::string compression = doc.at("compression").get<std::string>();
            if (format != "text" && format != "binary") bad("its header names an unknown COPY format '" + format + "'");
            if (compression != "zstd" && compression != "none")
                bad("its header names an unknown compression '" + compression + "'");
            header_.format = format == "text" ? CopyFormat::text : CopyFormat::binary;
            header_.compression = compression == "zstd" ? Compression::zstd : Compression::none;
        } catch (const nlohmann::json::exception& e) {
            bad(std::string("its header is malformed (") + e.what() + ")");
        }
    }

    std::string read_at(std::uint64_t offset, std::uint64_t size) const {
        std::string out(static_cast<std::size_t>(size), '\0');
        read_exact(offset, out.data(), out.size());
        return out;
    }

    void read_exact(std::uint64_t offset, char* into, std::size_t size) const {
        while (size > 0) {
            const ssize_t n = ::pread(fd_, into, size, static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) continue;
                io::detail::throw_errno("cannot read table backup " + file_quoted(path_), errno);
            }
            if (n == 0) bad("it became shorter while it was read");
            into += n;
            size -= static_cast<std::size_t>(n);
            offset += static_cast<std::uint64_t>(n);
        }
    }

    std::filesystem::path path_;
    int fd_ = -1;
    std::uint64_t size_ = 0, data_start_ = 0, rows_ = 0, data_bytes_ = 0, xxh3_ = 0;
    TableFileHeader header_;
};

} // namespace detail
} // namespace connpool::postgres
