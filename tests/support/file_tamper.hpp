#pragma once

// Changing a backup file behind its identity, for the tests of the restores' "checked already"
// shortcut (TableRestoreOptions::checked): the bytes change while io::file_identity (device,
// inode, size, modification time) stays what the manifest check saw.

#include <gtest/gtest.h>

#include <fcntl.h> // AT_FDCWD
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>

namespace connpool::testing {

/// Flips the low bit of the byte at `offset` of `path` in place; with `keep_mtime` the file's
/// modification time is put back afterwards, so its identity does not change.
inline void flip_byte(const std::filesystem::path& path, std::uint64_t offset, bool keep_mtime = true) {
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    ASSERT_LT(offset, static_cast<std::uint64_t>(st.st_size)) << path;
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(offset));
        char c = 0;
        f.get(c);
        f.seekp(static_cast<std::streamoff>(offset));
        f.put(static_cast<char>(c ^ 0x01));
    }
    if (keep_mtime) {
        const timespec times[2] = {st.st_atim, st.st_mtim};
        ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
    }
}

/// The middle byte of `path` (for flip_byte).
inline std::uint64_t middle_of(const std::filesystem::path& path) { return std::filesystem::file_size(path) / 2; }

} // namespace connpool::testing
