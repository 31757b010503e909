#pragma once

// io::TableFileWriter: streams one table backup file (table_file_format.hpp) into a descriptor,
// usually a TempFile's, buffered, hashed and compressed. The caller fsyncs and publishes.

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio> // std::snprintf
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h> // write

#include <nlohmann/json.hpp>
#include <zstd.h>

#include "checksum.hpp" // XXH3 (inline), to_hex
#include "durable_file.hpp"
#include "table_file_format.hpp"

namespace connpool::io {

/// Returns why a backup must not be written to `dest` ("" when it may): its directory is missing
/// or not one, `dest` is a directory, or it exists and `overwrite` is false. Checked before
/// anything is read, so a job fails before it does any work.
[[nodiscard]] inline std::string destination_problem(const std::filesystem::path& dest, bool overwrite) {
    namespace fs = std::filesystem;
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    std::error_code ec;
    const auto dir_status = fs::status(dir, ec);
    if (!fs::exists(dir_status)) return "directory " + detail::quoted(dir) + " does not exist";
    if (!fs::is_directory(dir_status)) return detail::quoted(dir) + " is not a directory";
    const auto status = fs::status(dest, ec);
    if (!fs::exists(status)) return "";
    if (fs::is_directory(status)) return detail::quoted(dest) + " is a directory";
    if (!overwrite) return detail::quoted(dest) + " exists (set TableBackupOptions::overwrite to replace it)";
    return "";
}

/// Streams a table file into a descriptor: buffered, hashed, compressed. One thread.
class TableFileWriter {
public:
    /// Writes `format`'s magic and the header to `fd` (named `path` in errors): the adapter's
    /// `fields` (a JSON object) plus format, format_version, compression and checksum. Data is
    /// compressed with zstd at `zstd_level` when `compression` asks for it. Throws io::Error.
    TableFileWriter(int fd, std::filesystem::path path, const TableFileFormat& format, nlohmann::json fields,
                    Compression compression, int zstd_level)
        : fd_(fd), path_(std::move(path)), compress_(compression == Compression::zstd) {
        XXH3_64bits_reset(&hash_);
        XXH3_64bits_reset(&file_hash_);
        if (compress_) {
            cctx_ = ZSTD_createCCtx();
            if (cctx_ == nullptr) throw Error("cannot compress " + detail::quoted(path_) + ": out of memory", ENOMEM);
            ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, zstd_level);
            ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
        }
        const std::string magic = format.magic();
        raw(magic.data(), magic.size());
        fields["format"] = format.name;
        fields["format_version"] = format.version;
        fields["compression"] = detail::compression_name(compression);
        fields["checksum"] = "xxh3-64";
        // Objects keep their keys sorted, so the line does not depend on the order they were set.
        const std::string text = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        raw(text.data(), text.size());
    }
    /// Frees the compressor; writes nothing (an unfinished file stays without a trailer).
    ~TableFileWriter() { ZSTD_freeCCtx(cctx_); }
    TableFileWriter(const TableFileWriter&) = delete;
    TableFileWriter& operator=(const TableFileWriter&) = delete;

    /// Adds `size` bytes of data; throws io::Error when writing or compressing fails.
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
        const std::string hex = to_hex(XXH3_64bits_digest(&hash_)) + "\n";
        write_all(hex.data(), hex.size());
    }

    /// Returns the data bytes so far (before compression).
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }

    /// Returns the size and XXH3-64 of every byte written, after finish(): the file's manifest
    /// entry, so a backup set need not read each file again to list it.
    [[nodiscard]] FileDigest file_digest() const noexcept { return {file_size_, XXH3_64bits_digest(&file_hash_)}; }

private:
    std::size_t compress(ZSTD_inBuffer* in, ZSTD_EndDirective mode) {
        std::array<char, 1 << 16> out_buffer;
        ZSTD_outBuffer out{out_buffer.data(), out_buffer.size(), 0};
        const std::size_t left = ZSTD_compressStream2(cctx_, &out, in, mode);
        if (ZSTD_isError(left))
            throw Error("cannot compress " + detail::quoted(path_) + ": " + ZSTD_getErrorName(left), EIO);
        raw(out_buffer.data(), out.pos);
        return left;
    }

    // Every byte before the digest is hashed, in file order, when it leaves the buffer: one
    // XXH3 update per megabyte instead of one per row (~100 bytes), same digest.
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
        XXH3_64bits_update(&file_hash_, bytes, size);
        file_size_ += size;
        while (size > 0) {
            const ssize_t n = ::write(fd_, bytes, size);
            if (n < 0) {
                if (errno == EINTR) continue;
                detail::throw_errno("cannot write " + detail::quoted(path_), errno);
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
    XXH3_state_t file_hash_{}; // the whole file, trailer included
    std::uint64_t file_size_ = 0;
    std::vector<char> buffer_;
    std::uint64_t data_bytes_ = 0;
};

} // namespace connpool::io
