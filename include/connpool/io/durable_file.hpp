#pragma once

// Durable files for backup adapters (POSIX): a temp file beside its destination, owner-only and
// locked while it is written; fsync; publish under the final name (atomic replace, or a
// no-replace publish that never clobbers a file that appeared meanwhile); fsync of the directory;
// and a sweep that removes the temp files of crashed writers but never one that is still being
// written.
//
// Design: a writer holds flock(LOCK_EX) on its temp file from creation until publish or removal,
// through a descriptor it keeps open. A crashed process's flocks vanish with it, so "not
// lockable" means "someone is writing it" and "lockable" means "stale". In this process, live
// temp paths are also kept in a registry, so the sweep never opens (and, on close, drops the
// POSIX locks of) a temp that a database library is writing through its own descriptor.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>  // renameat2, RENAME_NOREPLACE (glibc; g++ and libstdc++ define _GNU_SOURCE)
#include <cstring> // std::strerror
#include <filesystem>
#include <exception>
#include <initializer_list>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>    // open, O_CLOEXEC, O_DIRECTORY, AT_FDCWD
#include <sys/file.h> // flock
#include <sys/stat.h> // fstat, stat
#include <unistd.h>   // fsync, close, link, unlink

#include "../errors.hpp"

namespace connpool::io {

/// A file-system operation failed: what() names the file and says what went wrong; code() is errno.
class Error : public connpool::Error {
public:
    /// Builds the error from the full message and the errno it stems from (0 if none).
    Error(const std::string& message, int code) : connpool::Error(message), code_(code) {}
    /// Returns the errno value behind the failure (0 when it is not a system call's).
    [[nodiscard]] int code() const noexcept { return code_; }

private:
    int code_;
};

/// Whether publish() may replace an existing file at the destination.
enum class Publish { replace, no_replace };

/// The system calls of this layer in which file systems differ (renameat2 and hard links are
/// missing on some; fsync can fail). Tests replace them (ScopedSyscalls) to run the real code
/// paths of such a file system on any machine; nothing else should.
struct Syscalls {
    /// renameat2(2); ENOSYS/EINVAL where the kernel or file system lacks it or RENAME_NOREPLACE.
    int (*rename_noreplace)(const char* from, const char* to) = [](const char* from, const char* to) {
        return ::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
    };
    /// link(2); EPERM where the file system has no hard links (vfat, some FUSE and network mounts).
    int (*link)(const char* from, const char* to) = ::link;
    /// fsync(2) of a file or a directory.
    int (*fsync)(int fd) = ::fsync;
};

namespace detail {

inline Syscalls& syscalls() {
    static Syscalls table;
    return table;
}

inline std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

[[noreturn]] inline void throw_errno(const std::string& what, int error) {
    throw Error(what + ": " + std::strerror(error), error);
}

/// The longest file name most file systems take (NAME_MAX), less room for a database library's
/// companion suffix ("-journal") on the temp file.
inline constexpr std::size_t max_temp_name = 255 - 8;

/// Temp paths this process is writing; the sweep leaves them alone without opening them.
struct LiveTemps {
    std::mutex mu;
    std::set<std::string> paths;
    static LiveTemps& get() {
        static LiveTemps live;
        return live;
    }
};

inline void close_quietly(int fd) noexcept {
    if (fd >= 0) ::close(fd);
}

} // namespace detail

/// Replaces this layer's system calls (see Syscalls) while it lives, and puts the previous ones
/// back on destruction. For tests: install it before any durable-file work starts and destroy it
/// after that work ended (it is not synchronized with calls in flight).
class ScopedSyscalls {
public:
    /// Installs `replacement` process-wide.
    explicit ScopedSyscalls(const Syscalls& replacement) : saved_(detail::syscalls()) {
        detail::syscalls() = replacement;
    }
    ScopedSyscalls(const ScopedSyscalls&) = delete;
    ScopedSyscalls& operator=(const ScopedSyscalls&) = delete;
    /// Restores the system calls that were installed before.
    ~ScopedSyscalls() { detail::syscalls() = saved_; }

private:
    Syscalls saved_;
};

/// Returns the name prefix (without directory) every temp file of `dest` starts with:
/// ".<name>.tmp-", with a long name shortened (and a hash of it added) so that the whole temp
/// name, companions included, stays within NAME_MAX.
[[nodiscard]] inline std::string temp_prefix(const std::filesystem::path& dest) {
    const std::string name = dest.filename().string();
    constexpr std::size_t affix = 1 + 5 + 6; // "." + ".tmp-" + mkstemp's XXXXXX
    if (name.size() + affix <= detail::max_temp_name) return "." + name + ".tmp-";
    // FNV-1a of the full name keeps two long names with a common start apart.
    std::uint64_t h = 1469598103934665603ULL;
    for (const unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    const std::size_t keep = detail::max_temp_name - affix - 1 - 16;
    return "." + name.substr(0, keep) + "~" + hex + ".tmp-";
}

/// Flushes the open file `fd` (named `path` in errors) to stable storage, or throws Error.
inline void fsync_fd(int fd, const std::filesystem::path& path) {
    if (detail::syscalls().fsync(fd) != 0) detail::throw_errno("cannot flush " + detail::quoted(path) + " to disk", errno);
}

/// Flushes the file or directory at `path` to stable storage, or throws Error naming it.
inline void fsync_path(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) detail::throw_errno("cannot open " + detail::quoted(path) + " to flush it to disk", errno);
    if (detail::syscalls().fsync(fd) != 0) {
        const int error = errno;
        ::close(fd);
        detail::throw_errno("cannot flush " + detail::quoted(path) + " to disk", error);
    }
    ::close(fd);
}

/// Removes the temp files (and their `companions`, e.g. "-journal") of crashed writers of
/// `dest`: every ".<name>.tmp-*" beside it that no live writer holds locked. Never removes a temp
/// file that is being written, in this process or another. Returns how many temp files it
/// removed; throws Error only when the directory cannot be listed.
inline std::size_t remove_stale_temps(const std::filesystem::path& dest,
                                      std::initializer_list<std::string_view> companions = {}) {
    namespace fs = std::filesystem;
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    const std::string prefix = temp_prefix(dest);
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) throw Error("cannot list " + detail::quoted(dir) + " for stale temp files: " + ec.message(), ec.value());
    std::size_t removed = 0;
    std::vector<fs::path> companion_files; // seen while listing; those whose temp file is gone go last
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.rfind(prefix, 0) != 0) continue;
        const std::string rest = name.substr(prefix.size());
        if (rest.size() != 6) { // a companion ("-journal"): removed with its temp file
            if (std::any_of(companions.begin(), companions.end(),
                            [&](std::string_view suffix) { return rest.size() == 6 + suffix.size() && rest.substr(6) == suffix; }))
                companion_files.push_back(it->path());
            continue;
        }
        const fs::path path = it->path();
        {
            auto& live = detail::LiveTemps::get();
            std::lock_guard lock(live.mu);
            if (live.paths.count(path.string()) != 0) continue;
        }
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            ::close(fd); // not ours to judge, or a live writer holds it
            continue;
        }
        // Locked: no one is writing it. Removed while the lock is held, so a writer that raced
        // us to this very name (impossible with mkstemp, but cheap to rule out) sees it unlinked;
        // its companions first, so a sweep killed in between leaves the temp file to the next.
        for (const std::string_view suffix : companions) {
            std::error_code ignored;
            fs::remove(path.string() + std::string(suffix), ignored);
        }
        if (::unlink(path.c_str()) == 0) ++removed;
        ::close(fd);
    }
    // A companion whose temp file is gone was left by a writer or a sweep killed between the two
    // removals (as they were once ordered): no writer is behind it, since a live writer's temp
    // file exists until its companions are gone.
    for (const auto& companion : companion_files) {
        const std::string name = companion.filename().string();
        const fs::path temp = dir / name.substr(0, prefix.size() + 6);
        std::error_code missing;
        if (!fs::exists(fs::symlink_status(temp, missing))) {
            std::error_code ignored;
            fs::remove(companion, ignored);
        }
    }
    return removed;
}

/// A temp file beside a destination: created 0600 with a unique name (see temp_prefix), locked
/// (flock) for as long as this object lives, removed with its companions on destruction unless
/// published. Move-only; used by one thread.
class TempFile {
public:
    /// Creates the temp file for `dest` in dest's directory; for Publish::no_replace it also
    /// checks, before anything is written, that the file system can publish without replacing.
    /// Throws Error naming the directory when the file cannot be created.
    TempFile(const std::filesystem::path& dest, Publish mode, std::initializer_list<std::string_view> companions = {})
        : dest_(dest), mode_(mode), companions_(companions.begin(), companions.end()) {
        namespace fs = std::filesystem;
        dir_ = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
        for (int attempt = 0;; ++attempt) {
            std::string pattern = (dir_ / (temp_prefix(dest) + "XXXXXX")).string();
            const int fd = ::mkostemp(pattern.data(), O_CLOEXEC);
            if (fd < 0)
                detail::throw_errno(
                    "cannot create a temp file for " + detail::quoted(dest) + " in " + detail::quoted(dir_), errno);
            // A sweep that found the file before we locked it may hold the lock, or may already
            // have removed it: either way, take another name.
            struct stat by_fd {
            }, by_name{};
            if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &by_fd) == 0 &&
                ::stat(pattern.c_str(), &by_name) == 0 && by_fd.st_ino == by_name.st_ino &&
                by_fd.st_dev == by_name.st_dev) {
                fd_ = fd;
                path_ = pattern;
                break;
            }
            ::close(fd);
            if (attempt > 100) throw Error("cannot lock a temp file for " + detail::quoted(dest), EAGAIN);
        }
        {
            auto& live = detail::LiveTemps::get();
            std::lock_guard lock(live.mu);
            live.paths.insert(path_.string());
        }
        if (mode_ == Publish::no_replace) {
            try {
                probe_no_replace();
            } catch (...) { // no destructor runs for a constructor that throws: clean up here
                ::unlink(path_.c_str());
                ::unlink((path_.string() + "-probe").c_str());
                forget();
                detail::close_quietly(fd_);
                throw;
            }
        }
    }

    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;

    /// Removes the file and its companions unless it was published; releases the lock.
    ~TempFile() {
        if (!published_) {
            // Companions first: a process killed in between leaves the temp file, which the next
            // sweep finds (and its companions with it).
            std::error_code ignored;
            for (const auto& suffix : companions_) std::filesystem::remove(path_.string() + suffix, ignored);
            std::filesystem::remove(path_, ignored);
        }
        forget();
        detail::close_quietly(fd_);
    }

    /// Returns the temp file's current path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    /// Returns the descriptor that holds the lock (open read-write), e.g. for writing or fsync.
    [[nodiscard]] int fd() const noexcept { return fd_; }

    /// Flushes the file's data and size to stable storage; throws Error naming the file.
    void sync() const { fsync_fd(fd_, path_); }

    /// Runs sync() on another thread while `work` runs on this one, and returns when both are
    /// done: for work that reads the file through the page cache (a checksum of it, say), which
    /// gives the same bytes before the flush as after it, so it can use the time the flush
    /// spends waiting for the device. Rethrows `work`'s exception if it threw, else sync()'s.
    /// Runs the two one after the other when no thread can be started.
    template <class Work>
    void sync_while(Work&& work) const {
        std::exception_ptr sync_error;
        std::thread syncer;
        try {
            syncer = std::thread([this, &sync_error] {
                try {
                    sync();
                } catch (...) {
                    sync_error = std::current_exception();
                }
            });
        } catch (const std::system_error&) { // no thread to be had: one after the other
            sync();
            work();
            return;
        }
        try {
            work();
        } catch (...) {
            syncer.join();
            throw;
        }
        syncer.join();
        if (sync_error) std::rethrow_exception(sync_error);
    }

    /// Asks the kernel to drop the file's cached pages (after sync(): they are clean), so that
    /// reading it back reads storage rather than memory. Best effort: some file systems keep them.
    void drop_cached_pages() const noexcept { (void)::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED); }

    /// Gives the file its final name: replaces an existing file (Publish::replace, atomic) or
    /// fails with EEXIST without touching one (Publish::no_replace), then flushes the directory.
    /// Throws Error saying exactly what is true: when only the directory flush failed, the file
    /// is complete under its final name but the name may not survive a power loss.
    void publish() {
        if (mode_ == Publish::replace) {
            if (::rename(path_.c_str(), dest_.c_str()) != 0)
                detail::throw_errno("cannot move " + detail::quoted(path_) + " to " + detail::quoted(dest_), errno);
        } else {
            if (const int error = rename_no_replace(path_, dest_); error != 0) {
                if (error == EEXIST)
                    throw Error("cannot publish " + detail::quoted(dest_) + ": the file exists (it appeared meanwhile)",
                                EEXIST);
                detail::throw_errno("cannot move " + detail::quoted(path_) + " to " + detail::quoted(dest_), error);
            }
        }
        published_ = true;
        forget();
        const int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const int error = fd < 0 ? errno : (detail::syscalls().fsync(fd) != 0 ? errno : 0);
        detail::close_quietly(fd);
        if (error != 0)
            throw Error(detail::quoted(dest_) +
                            " is complete and in place under its final name, but flushing its "
                            "directory " +
                            detail::quoted(dir_) + " to disk failed (" + std::strerror(error) +
                            "): after a power loss the new name may be missing",
                        error);
    }

private:
    /// Returns 0 or errno: renameat2(RENAME_NOREPLACE), or link + unlink where the file system
    /// has no renameat2 (link fails with EEXIST too, so neither ever replaces a file).
    int rename_no_replace(const std::filesystem::path& from, const std::filesystem::path& to) const {
        if (use_link_) {
            if (detail::syscalls().link(from.c_str(), to.c_str()) != 0) return errno;
            ::unlink(from.c_str());
            return 0;
        }
        return detail::syscalls().rename_noreplace(from.c_str(), to.c_str()) == 0 ? 0 : errno;
    }

    /// Finds, on the empty temp file, how this file system publishes without replacing, so a
    /// file system that can do neither fails before the copy rather than after it.
    void probe_no_replace() {
        const std::filesystem::path probe = path_.string() + "-probe";
        if (detail::syscalls().rename_noreplace(path_.c_str(), probe.c_str()) == 0) {
            if (::rename(probe.c_str(), path_.c_str()) != 0)
                detail::throw_errno("cannot rename the temp file " + detail::quoted(probe) + " back", errno);
            return;
        }
        const int error = errno;
        if (error != EINVAL && error != ENOSYS && error != ENOTSUP)
            detail::throw_errno("cannot test publishing into " + detail::quoted(dir_), error);
        if (detail::syscalls().link(path_.c_str(), probe.c_str()) != 0)
            detail::throw_errno("cannot publish " + detail::quoted(dest_) +
                                    " without replacing: the file system supports neither renameat2(RENAME_NOREPLACE) "
                                    "nor hard links (allow replacing to use plain rename)",
                                errno);
        ::unlink(probe.c_str());
        use_link_ = true;
    }

    void forget() noexcept {
        auto& live = detail::LiveTemps::get();
        std::lock_guard lock(live.mu);
        live.paths.erase(path_.string());
    }

    std::filesystem::path dest_;
    std::filesystem::path dir_;
    std::filesystem::path path_;
    Publish mode_;
    std::vector<std::string> companions_;
    int fd_ = -1;
    bool published_ = false;
    bool use_link_ = false;
};

} // namespace connpool::io
