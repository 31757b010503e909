#pragma once

// Shared by the io/ tests and the SQLite tests that exercise io/ through backup_to: a fixture
// with a fresh directory, small file helpers, and the system-call tables of file systems this
// machine may not have (io::Syscalls), which answer the way such a file system's kernel does.

#include <connpool/io/durable_file.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h> // mount, umount2
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib> // getenv
#include <cstring> // strerror
#include <filesystem>
#include <string>

#include "sqlite_fixtures.hpp" // TempDir, file helpers

namespace connpool::testing {

/// A test with its own directory (`dir_`) and a destination path in it (`dest_`).
class IoTest : public ::testing::Test {
protected:
    /// Writes all of `bytes` through `fd` (a temp file's).
    static void write_all(int fd, const std::string& bytes) {
        ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    }
    /// Returns whether another open file description can take the flock on `path` now.
    static bool lockable(const fs::path& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return false;
        const bool ok = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
        ::close(fd);
        return ok;
    }

    TempDir dir_;
    fs::path dest_ = dir_ / "backup.bin";
};

/// The system calls of a file system without renameat2(RENAME_NOREPLACE): the kernel answers
/// EINVAL there (ext4 and tmpfs have it; older NFS, CIFS and many FUSE mounts do not).
inline io::Syscalls without_renameat2() {
    io::Syscalls s;
    s.rename_noreplace = [](const char*, const char*) {
        errno = EINVAL;
        return -1;
    };
    return s;
}

/// The system calls of a file system with neither renameat2(RENAME_NOREPLACE) nor hard links
/// (vfat, exFAT): link(2) answers EPERM there.
inline io::Syscalls without_renameat2_or_hard_links() {
    io::Syscalls s = without_renameat2();
    s.link = [](const char*, const char*) {
        errno = EPERM;
        return -1;
    };
    return s;
}

/// The system calls of a file system whose directories fail fsync with EIO (a failing device
/// or a network file system that lost its server), while files still sync.
inline io::Syscalls with_failing_directory_fsync() {
    io::Syscalls s;
    s.fsync = [](int fd) {
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            errno = EIO;
            return -1;
        }
        return ::fsync(fd);
    };
    return s;
}

/// A read-only view of a directory: a bind mount of `dir` at `at`, remounted read-only, and
/// detached on destruction. Needs CAP_SYS_ADMIN (root, as on CI); ok() says whether it worked and
/// reason() why not.
class ReadOnlyBindMount {
public:
    ReadOnlyBindMount(const fs::path& dir, const fs::path& at) : at_(at) {
        std::error_code ec;
        fs::create_directories(at, ec);
        if (::mount(dir.c_str(), at.c_str(), nullptr, MS_BIND, nullptr) != 0) {
            reason_ = "cannot bind-mount " + dir.string() + " at " + at.string() + ": " + std::strerror(errno);
            return;
        }
        mounted_ = true;
        if (::mount(nullptr, at.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
            reason_ = "cannot remount " + at.string() + " read-only: " + std::strerror(errno);
    }
    ReadOnlyBindMount(const ReadOnlyBindMount&) = delete;
    ReadOnlyBindMount& operator=(const ReadOnlyBindMount&) = delete;
    ~ReadOnlyBindMount() {
        if (mounted_) ::umount2(at_.c_str(), MNT_DETACH);
    }
    /// Returns whether `at` is now a read-only view of the directory.
    [[nodiscard]] bool ok() const noexcept { return mounted_ && reason_.empty(); }
    /// Returns why mounting failed ("" when it worked).
    [[nodiscard]] const std::string& reason() const noexcept { return reason_; }

private:
    fs::path at_;
    bool mounted_ = false;
    std::string reason_;
};

/// Returns whether the tests run on CI (the CI variable is set), where nothing may be skipped.
inline bool on_ci() {
    const char* ci = std::getenv("CI");
    return ci != nullptr && *ci != '\0';
}

/// In a test body: skips the test when the ReadOnlyBindMount `mount` did not work, or fails it
/// saying why when on CI (where every test must run).
#define CONNPOOL_REQUIRE_READ_ONLY_MOUNT(mount)                                                   \
    do {                                                                                           \
        if (!(mount).ok()) {                                                                       \
            if (::connpool::testing::on_ci()) FAIL() << "CI must run this test, but: " << (mount).reason(); \
            GTEST_SKIP() << (mount).reason();                                                      \
        }                                                                                          \
    } while (false)

} // namespace connpool::testing
