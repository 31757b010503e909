#pragma once

// io::TableFileReader: opens a table backup file (table_file_format.hpp), refusing at once a file
// that is not one of the expected format (missing, empty, another format or version, malformed
// header, no trailer), and reads its data as often as asked, each pass checking the checksum, the
// data size and (RowFraming::lines) the row count against the trailer. Every refusal is an
// io::Error "table backup '<path>' is unusable: <why>".

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio> // std::sscanf
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h> // pread, close

#include <nlohmann/json.hpp>
#include <zstd.h>

#include "checksum.hpp" // XXH3 (inline), to_hex
#include "durable_file.hpp"
#include "table_file_format.hpp"

namespace connpool::io {

/// Reads a table file: the header at once, then the data as often as asked. One thread.
class TableFileReader {
public:
    /// Reads the adapter's header fields out of the header's JSON object (throwing through
    /// reader.refuse(), or nlohmann::json's exceptions for missing or mistyped fields) and says
    /// how the data's rows are framed.
    using HeaderParser = std::function<RowFraming(const nlohmann::json& fields, const TableFileReader& reader)>;

    /// Opens `path`, checks its magic against `format`, parses its header (the format version and
    /// compression here, the rest by `parse`) and reads its trailer; throws io::Error naming the
    /// file and what is wrong.
    TableFileReader(std::filesystem::path path, const TableFileFormat& format, const HeaderParser& parse)
        : path_(std::move(path)) {
        fd_.fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_.fd < 0) detail::throw_errno("cannot read table backup " + detail::quoted(path_), errno);
        struct stat st {};
        if (::fstat(fd_.fd, &st) != 0) detail::throw_errno("cannot read table backup " + detail::quoted(path_), errno);
        if (!S_ISREG(st.st_mode)) refuse("it is not a regular file");
        size_ = static_cast<std::uint64_t>(st.st_size);
        if (size_ == 0) refuse("the file is empty");
        const std::string magic = format.magic();
        // Most headers are a few hundred bytes: read 64 KiB first, the whole limit only if needed.
        std::string start = read_at(0, std::min<std::uint64_t>(size_, 64u << 10));
        check_magic(start, format, magic);
        std::size_t end = start.find('\n', magic.size());
        if (end == std::string::npos && start.size() < size_) {
            start = read_at(0, std::min<std::uint64_t>(size_, detail::max_table_header_size + magic.size()));
            end = start.find('\n', magic.size());
        }
        if (end == std::string::npos) refuse("its header is incomplete (the file is truncated)");
        const auto doc = nlohmann::json::parse(start.substr(magic.size(), end - magic.size()), nullptr, false);
        parse_header(doc, format, parse);
        data_start_ = end + 1;
        if (size_ < data_start_ + detail::table_trailer_size) refuse("it has no trailer (the file is truncated)");
        const std::string trailer = read_at(size_ - detail::table_trailer_size, detail::table_trailer_size);
        unsigned long long rows = 0, bytes = 0;
        char hex[17] = {};
        if (trailer.compare(0, 4, "END ") != 0 || trailer.back() != '\n' ||
            std::sscanf(trailer.c_str(), "END %20llu %20llu %16[0-9a-f]", &rows, &bytes, hex) != 3 ||
            std::strlen(hex) != 16)
            refuse("it has no valid trailer (the file is truncated or was changed)");
        rows_ = rows;
        data_bytes_ = bytes;
        xxh3_ = std::stoull(hex, nullptr, 16);
    }
    TableFileReader(const TableFileReader&) = delete;
    TableFileReader& operator=(const TableFileReader&) = delete;

    /// Returns the row count and data size the trailer records.
    [[nodiscard]] std::uint64_t rows() const noexcept { return rows_; }
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }
    /// Returns how the data is compressed.
    [[nodiscard]] Compression compression() const noexcept { return compression_; }
    /// Returns the file's path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    /// Throws io::Error "table backup '<path>' is unusable: <why>" (EINVAL).
    [[noreturn]] void refuse(const std::string& why) const {
        throw Error("table backup " + detail::quoted(path_) + " is unusable: " + why, EINVAL);
    }

    class Pass;

    /// Reads the whole file, giving the data to `sink` in chunks (when sink returns false the
    /// pass stops and returns false); throws io::Error when the checksum, the size of the data or
    /// (RowFraming::lines) its row count differ from the trailer's, or the compressed data is
    /// damaged. A sink may be handed data of a file that then fails: a restore must not commit
    /// what it loaded before this returned true.
    bool read_data(const std::function<bool(const char*, std::size_t)>& sink);

private:
    void check_magic(const std::string& start, const TableFileFormat& format, const std::string& magic) const {
        if (start.compare(0, magic.size(), magic) == 0) return;
        const std::string name(format.name);
        if (start.rfind(name + " ", 0) == 0)
            refuse("it has another format version (this library reads " + std::to_string(format.version) + ")");
        // Another adapter's table file ("connpool-mysql-table 1" given to PostgreSQL, say).
        const std::string first = start.substr(0, std::min(start.find('\n'), std::size_t{64}));
        if (first.rfind("connpool-", 0) == 0 && first.find("-table ") != std::string::npos)
            refuse("it is a '" + first.substr(0, first.find(' ')) + "' file, not a '" + name + "' one");
        refuse("it is not a connpool table backup (no '" + name + "' magic)");
    }

    void parse_header(const nlohmann::json& doc, const TableFileFormat& format, const HeaderParser& parse) {
        try {
            if (!doc.is_object()) refuse("its header is not valid JSON");
            if (doc.value("format_version", 0) != format.version) refuse("its header has another format version");
            framing_ = parse(doc, *this);
            const std::string compression = doc.at("compression").get<std::string>();
            if (compression != "zstd" && compression != "none")
                refuse("its header names an unknown compression '" + compression + "'");
            compression_ = compression == "zstd" ? Compression::zstd : Compression::none;
        } catch (const nlohmann::json::exception& e) {
            refuse(std::string("its header is malformed (") + e.what() + ")");
        }
    }

    std::string read_at(std::uint64_t offset, std::uint64_t size) const {
        std::string out(static_cast<std::size_t>(size), '\0');
        read_exact(offset, out.data(), out.size());
        return out;
    }

    void read_exact(std::uint64_t offset, char* into, std::size_t size) const {
        while (size > 0) {
            const ssize_t n = ::pread(fd_.fd, into, size, static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) continue;
                detail::throw_errno("cannot read table backup " + detail::quoted(path_), errno);
            }
            if (n == 0) refuse("it became shorter while it was read");
            into += n;
            size -= static_cast<std::size_t>(n);
            offset += static_cast<std::uint64_t>(n);
        }
    }

    // Closed by its own destructor, so a file refused in the constructor does not leak it.
    struct Descriptor {
        int fd = -1;
        ~Descriptor() { detail::close_quietly(fd); }
    };

    std::filesystem::path path_;
    Descriptor fd_;
    std::uint64_t size_ = 0, data_start_ = 0, rows_ = 0, data_bytes_ = 0, xxh3_ = 0;
    Compression compression_ = Compression::none;
    RowFraming framing_ = RowFraming::lines;
};

namespace detail {

/// Returns how many '\n' bytes the `n` bytes at `p` hold. Eight bytes at a time (SWAR), because
/// at -O2 std::count compiles to a byte loop that took as long as encoding the rows (16 % of a
/// backup's CPU, 20 ms per 35 MB); this takes 4 ms, however short the rows (memchr, 2.6 ms on
/// 80-byte rows, slows to a call per byte on 2-byte ones).
[[nodiscard]] inline std::uint64_t count_newlines(const char* p, std::size_t n) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101ULL, low7 = 0x7f7f7f7f7f7f7f7fULL, newlines = ones * '\n';
    std::uint64_t count = 0;
    std::size_t i = 0;
    const std::size_t words_end = n - n % 8;
    while (i < words_end) {
        // Up to 255 words per round, so no byte of `matches` overflows before it is summed.
        std::uint64_t matches = 0;
        const std::size_t round_end = std::min(words_end, i + 8 * 255);
        for (; i < round_end; i += 8) {
            std::uint64_t word;
            std::memcpy(&word, p + i, 8);
            const std::uint64_t x = word ^ newlines;               // a '\n' byte becomes 0
            const std::uint64_t nonzero = ((x & low7) + low7) | x; // its high bit is set unless 0
            matches += (~nonzero >> 7) & ones;
        }
        // The sum of its bytes (up to 8 * 255, more than a byte holds): in 16-bit lanes.
        constexpr std::uint64_t low_bytes = 0x00ff00ff00ff00ffULL;
        const std::uint64_t pairs = (matches & low_bytes) + ((matches >> 8) & low_bytes);
        count += (pairs * 0x0001000100010001ULL) >> 48;
    }
    for (; i < n; ++i) count += p[i] == '\n' ? 1 : 0;
    return count;
}

} // namespace detail

/// One pass over a table file's data, pulled a chunk at a time (for a consumer that asks for
/// data, as LOAD DATA LOCAL's read callback does): next() returns the next chunk, and at the end
/// checks the checksum, the data size and the row count, exactly as read_data does. Borrows the
/// reader, which must outlive it. One thread.
class TableFileReader::Pass {
public:
    /// Starts at the beginning of `reader`'s file; throws io::Error when out of memory.
    explicit Pass(const TableFileReader& reader)
        : r_(reader),
          in_size_(static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, reader.size_))),
          // Uninitialised and no larger than the file: a small table's check should not zero and
          // fault in a megabyte (it showed in the tiny-backup profile).
          in_(new char[in_size_]),
          hashed_end_(reader.size_ - detail::table_digest_size),
          data_end_(reader.size_ - detail::table_trailer_size),
          count_lines_(reader.framing_ == RowFraming::lines) {
        XXH3_64bits_reset(&hash_);
        if (reader.compression_ == Compression::zstd) {
            dctx_ = ZSTD_createDCtx();
            if (dctx_ == nullptr) throw Error("cannot decompress " + detail::quoted(r_.path_) + ": out of memory", ENOMEM);
            out_size_ = ZSTD_DStreamOutSize();
            out_.reset(new char[out_size_]);
        }
    }
    /// Frees the decompressor.
    ~Pass() { ZSTD_freeDCtx(dctx_); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

    /// Returns the next chunk of data (valid until the next call), or an empty view once the data
    /// has ended and checked out; throws io::Error (see read_data) when it does not.
    std::string_view next() {
        for (;;) {
            if (dctx_ != nullptr && (zin_.pos < zin_.size || out_full_)) {
                // A full output buffer may leave decoded data inside zstd with all the input
                // consumed: call again until it comes out short.
                ZSTD_outBuffer zout{out_.get(), out_size_, 0};
                last_ = ZSTD_decompressStream(dctx_, &zout, &zin_);
                if (ZSTD_isError(last_))
                    r_.refuse(std::string("its compressed data is damaged (") + ZSTD_getErrorName(last_) + ")");
                out_full_ = zout.pos == zout.size;
                if (zout.pos > 0) return deliver(out_.get(), zout.pos);
                continue;
            }
            if (!raw_.empty()) {
                const std::string_view chunk = std::exchange(raw_, {});
                return deliver(chunk.data(), chunk.size());
            }
            if (pos_ >= hashed_end_) return finish();
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(in_size_, hashed_end_ - pos_));
            r_.read_exact(pos_, in_.get(), want);
            XXH3_64bits_update(&hash_, in_.get(), want);
            // Only the part between the header and the trailer is data.
            const std::size_t from =
                pos_ < r_.data_start_ ? static_cast<std::size_t>(std::min<std::uint64_t>(r_.data_start_ - pos_, want)) : 0;
            const std::size_t to =
                pos_ + want <= data_end_ ? want : static_cast<std::size_t>(data_end_ > pos_ ? data_end_ - pos_ : 0);
            pos_ += want;
            if (to <= from) continue;
            if (dctx_ != nullptr)
                zin_ = ZSTD_inBuffer{in_.get() + from, to - from, 0};
            else
                raw_ = std::string_view(in_.get() + from, to - from);
        }
    }

private:
    std::string_view deliver(const char* p, std::size_t n) {
        bytes_ += n;
        if (count_lines_)
            newlines_ += detail::count_newlines(p, n);
        return {p, n};
    }

    std::string_view finish() {
        if (done_) return {};
        if (dctx_ != nullptr && last_ != 0) r_.refuse("its compressed data ends in the middle of a frame");
        const std::uint64_t digest = XXH3_64bits_digest(&hash_);
        if (digest != r_.xxh3_)
            r_.refuse("it does not match its checksum (xxh3 " + to_hex(digest) + ", the trailer says " + to_hex(r_.xxh3_) +
                      "): it was changed or damaged");
        if (bytes_ != r_.data_bytes_)
            r_.refuse("its data has " + std::to_string(bytes_) + " bytes; the trailer says " + std::to_string(r_.data_bytes_));
        if (count_lines_ && newlines_ != r_.rows_)
            r_.refuse("its data has " + std::to_string(newlines_) + " rows; the trailer says " + std::to_string(r_.rows_));
        done_ = true;
        return {};
    }

    const TableFileReader& r_;
    std::size_t in_size_;
    std::unique_ptr<char[]> in_;
    std::uint64_t hashed_end_, data_end_;
    bool count_lines_;
    XXH3_state_t hash_{};
    ZSTD_DCtx* dctx_ = nullptr;
    std::size_t out_size_ = 0;
    std::unique_ptr<char[]> out_;
    ZSTD_inBuffer zin_{nullptr, 0, 0};
    std::string_view raw_{};
    std::uint64_t pos_ = 0, bytes_ = 0, newlines_ = 0;
    std::size_t last_ = 1; // zstd: 0 once a frame ended exactly
    bool out_full_ = false, done_ = false;
};

inline bool TableFileReader::read_data(const std::function<bool(const char*, std::size_t)>& sink) {
    Pass pass(*this);
    for (;;) {
        const std::string_view chunk = pass.next();
        if (chunk.empty()) return true;
        if (!sink(chunk.data(), chunk.size())) return false;
    }
}

} // namespace connpool::io
