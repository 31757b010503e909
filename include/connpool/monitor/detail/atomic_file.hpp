#pragma once

// A minimal private "replace a file atomically" for the node_exporter textfile mode. The adapters
// are getting a shared durable-file layer (include/connpool/io/); when it lands, this goes and
// write_textfile() calls it instead. Kept small and private on purpose.

#include <cerrno>
#include <cstring> // std::strerror
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fcntl.h>    // open, O_DIRECTORY
#include <sys/stat.h> // fchmod
#include <unistd.h>   // write, fsync, close

namespace connpool::monitor::detail {

[[noreturn]] inline void throw_file_error(const std::string& what, const std::filesystem::path& path, int error) {
    throw std::runtime_error("cannot " + what + " '" + path.string() + "': " + std::strerror(error));
}

/// Replaces `path` with `contents` so that a reader sees the old file or the new one, never a
/// part: a temp file in the same directory, written, fsynced, made world-readable (`mode`),
/// renamed over `path`, and the directory fsynced. The temp name starts with '.' and does not
/// end in ".prom", so node_exporter never reads it. Throws std::runtime_error naming the file.
inline void replace_file(const std::filesystem::path& path, std::string_view contents, mode_t mode = 0644) {
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::string temp = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
    const int fd = ::mkstemp(temp.data());
    if (fd < 0) throw_file_error("create a temporary file beside", path, errno);
    const auto fail = [&](const char* what) {
        const int error = errno;
        ::close(fd);
        ::unlink(temp.c_str());
        throw_file_error(what, path, error);
    };
    for (std::size_t written = 0; written < contents.size();) {
        const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("write");
        written += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, mode) != 0) fail("set the mode of");
    if (::fsync(fd) != 0) fail("sync");
    if (::close(fd) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        throw_file_error("write", path, error);
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        throw_file_error("rename a temporary file to", path, error);
    }
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        ::fsync(dfd); // the rename itself survives a crash
        ::close(dfd);
    }
}

} // namespace connpool::monitor::detail
