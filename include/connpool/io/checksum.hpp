#pragma once

// Checksums of files and byte ranges with xxHash's XXH3-64 (Debian: libxxhash-dev), used in
// backup-set manifests and to verify that a copy reads back as written. Compiled inline
// (XXH_INLINE_ALL), so nothing is linked and the symbols stay private to each user.

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio> // std::snprintf
#include <cstring>
#include <filesystem>
#include <string>

#include <fcntl.h>  // open
#include <unistd.h> // read, close

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "durable_file.hpp" // io::Error

namespace connpool::io {

/// A file's size and XXH3-64 checksum.
struct FileDigest {
    /// Size in bytes.
    std::uint64_t size = 0;
    /// XXH3-64 of the whole content.
    std::uint64_t xxh3 = 0;
    friend bool operator==(const FileDigest&, const FileDigest&) = default;
};

/// Returns the XXH3-64 of `size` bytes at `data`.
[[nodiscard]] inline std::uint64_t xxh3(const void* data, std::size_t size) noexcept { return XXH3_64bits(data, size); }

/// Returns `value` as 16 lowercase hex digits (how manifests write checksums).
[[nodiscard]] inline std::string to_hex(std::uint64_t value) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
    return text;
}

/// Returns the size and XXH3-64 of the file at `path`, read in one pass; throws Error naming it.
[[nodiscard]] inline FileDigest digest_file(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) detail::throw_errno("cannot read " + detail::quoted(path), errno);
    XXH3_state_t* state = XXH3_createState();
    if (state == nullptr) {
        ::close(fd);
        throw Error("cannot checksum " + detail::quoted(path) + ": out of memory", ENOMEM);
    }
    XXH3_64bits_reset(state);
    FileDigest digest;
    static thread_local std::array<char, 1 << 16> buffer;
    for (;;) {
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            const int error = errno;
            XXH3_freeState(state);
            ::close(fd);
            detail::throw_errno("cannot read " + detail::quoted(path), error);
        }
        if (n == 0) break;
        XXH3_64bits_update(state, buffer.data(), static_cast<std::size_t>(n));
        digest.size += static_cast<std::uint64_t>(n);
    }
    digest.xxh3 = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    ::close(fd);
    return digest;
}

} // namespace connpool::io
