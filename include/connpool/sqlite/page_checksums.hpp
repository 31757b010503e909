#pragma once

// Check::pages: a checksum (XXH3-64) of every page as SQLite writes it into a backup file,
// compared with the file read back once it is closed. It proves that every page of the file is
// one SQLite wrote from the snapshot (none lost, torn, stale or missing, the size right), at
// the cost of hashing and one sequential read; quick_check then proves the file opens and reads
// as a database.
//
// Design: a VFS ("connpool-page-checksums") wraps the default one. A PageChecksums object
// registers the path it will open; the VFS looks the path up when SQLite opens the main database
// file and hands that file the object, which only the thread using that connection touches. The
// registry itself is guarded by a mutex.

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>  // open
#include <unistd.h> // pread, close

#include <sqlite3.h>

#include "../io/checksum.hpp"
#include "../jobs.hpp" // OperationError
#include "error.hpp"

namespace connpool::sqlite::detail {

/// The checksums of the pages written to one backup file (see the file comment).
class PageChecksums {
public:
    PageChecksums() = default;
    PageChecksums(const PageChecksums&) = delete;
    PageChecksums& operator=(const PageChecksums&) = delete;
    ~PageChecksums() {
        if (!path_.empty()) registry().erase(path_, this);
    }

    /// Opens `path` read-write through the checksumming VFS; throws Error naming it.
    DbPtr open(const std::filesystem::path& path) {
        std::error_code ec;
        const auto full = std::filesystem::weakly_canonical(path, ec);
        path_ = (ec ? std::filesystem::absolute(path).lexically_normal() : full).string();
        registry().add(path_, this);
        return open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, "backup file", vfs_name());
    }

    /// Reads the closed file at `path` back and throws an OperationError (`what`: the job) unless
    /// every page in it was written through this object and reads back with the same checksum.
    void verify(const std::filesystem::path& path, const std::string& what) const {
        if (page_size_ <= 0) throw OperationError(what + ": verifying the copy failed: no page was written");
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw OperationError(what + ": cannot read the copy back: " + std::strerror(errno));
        std::vector<unsigned char> page(static_cast<std::size_t>(page_size_));
        std::int64_t offset = 0;
        std::string problem;
        for (;; offset += page_size_) {
            const ssize_t n = ::pread(fd, page.data(), page.size(), offset);
            if (n < 0 && errno == EINTR) {
                offset -= page_size_;
                continue;
            }
            if (n < 0) {
                problem = std::string("reading it back failed: ") + std::strerror(errno);
                break;
            }
            if (n == 0) break;
            const auto number = offset / page_size_ + 1;
            if (n != page_size_) {
                problem = "it ends inside page " + std::to_string(number);
                break;
            }
            const auto it = pages_.find(offset);
            if (it == pages_.end()) {
                problem = "page " + std::to_string(number) + " was never written by the copy";
                break;
            }
            if (it->second != io::xxh3(page.data(), page.size())) {
                problem = "page " + std::to_string(number) + " reads back different from what was written";
                break;
            }
        }
        ::close(fd);
        if (problem.empty() && static_cast<std::size_t>(offset / page_size_) != pages_.size())
            problem = "it has " + std::to_string(offset / page_size_) + " pages, but " + std::to_string(pages_.size()) +
                      " were written";
        if (!problem.empty()) throw OperationError(what + ": the copy failed its page checksums: " + problem);
    }

private:
    friend struct ChecksumVfs;

    void record(const void* data, int size, std::int64_t offset) {
        if (size != page_size_) { // first write, or the page size changed: earlier pages are void
            pages_.clear();
            page_size_ = size;
        }
        pages_[offset] = io::xxh3(data, static_cast<std::size_t>(size));
    }
    void truncate(std::int64_t size) { pages_.erase(pages_.lower_bound(size), pages_.end()); }

    struct Registry {
        std::mutex mu;
        std::map<std::string, PageChecksums*> by_path;
        void add(const std::string& path, PageChecksums* p) {
            std::lock_guard lock(mu);
            by_path[path] = p;
        }
        void erase(const std::string& path, PageChecksums* p) {
            std::lock_guard lock(mu);
            if (auto it = by_path.find(path); it != by_path.end() && it->second == p) by_path.erase(it);
        }
        PageChecksums* find(const char* path) {
            std::lock_guard lock(mu);
            const auto it = by_path.find(path);
            return it == by_path.end() ? nullptr : it->second;
        }
    };
    static Registry& registry() {
        static Registry r;
        return r;
    }
    static const char* vfs_name();

    std::string path_;
    int page_size_ = 0;
    std::map<std::int64_t, std::uint64_t> pages_; // by offset
};

/// The wrapping VFS: forwards everything, and records the pages written to registered files.
struct ChecksumVfs {
    struct File {
        sqlite3_file base;
        sqlite3_file* real;
        PageChecksums* sums;
    };
    static sqlite3_file* real(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }

    static int x_close(sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); }
    static int x_read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
        return real(f)->pMethods->xRead(real(f), p, n, off);
    }
    static int x_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
        const int rc = real(f)->pMethods->xWrite(real(f), p, n, off);
        if (rc == SQLITE_OK) reinterpret_cast<File*>(f)->sums->record(p, n, off);
        return rc;
    }
    static int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
        const int rc = real(f)->pMethods->xTruncate(real(f), size);
        if (rc == SQLITE_OK) reinterpret_cast<File*>(f)->sums->truncate(size);
        return rc;
    }
    static int x_sync(sqlite3_file* f, int flags) { return real(f)->pMethods->xSync(real(f), flags); }
    static int x_file_size(sqlite3_file* f, sqlite3_int64* size) { return real(f)->pMethods->xFileSize(real(f), size); }
    static int x_lock(sqlite3_file* f, int l) { return real(f)->pMethods->xLock(real(f), l); }
    static int x_unlock(sqlite3_file* f, int l) { return real(f)->pMethods->xUnlock(real(f), l); }
    static int x_check_reserved(sqlite3_file* f, int* out) {
        return real(f)->pMethods->xCheckReservedLock(real(f), out);
    }
    static int x_file_control(sqlite3_file* f, int op, void* arg) {
        return real(f)->pMethods->xFileControl(real(f), op, arg);
    }
    static int x_sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
    static int x_device_characteristics(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
    static int x_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
        return real(f)->pMethods->xShmMap(real(f), region, size, extend, out);
    }
    static int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
        return real(f)->pMethods->xShmLock(real(f), offset, n, flags);
    }
    static void x_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
    static int x_shm_unmap(sqlite3_file* f, int del) { return real(f)->pMethods->xShmUnmap(real(f), del); }
    // No memory-mapped writes bypass xWrite (SQLite writes through xWrite even with mmap on),
    // but reads may be mapped: forward them.
    static int x_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
        return real(f)->pMethods->xFetch(real(f), off, n, out);
    }
    static int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
        return real(f)->pMethods->xUnfetch(real(f), off, p);
    }

    static constexpr int slack = 1024; // room for a wrapping VFS installed later (tests)
    static sqlite3_vfs*& base() {
        static sqlite3_vfs* b = nullptr;
        return b;
    }
    static const sqlite3_io_methods* methods(int version) {
        static const sqlite3_io_methods v3{3,
                                           x_close,
                                           x_read,
                                           x_write,
                                           x_truncate,
                                           x_sync,
                                           x_file_size,
                                           x_lock,
                                           x_unlock,
                                           x_check_reserved,
                                           x_file_control,
                                           x_sector_size,
                                           x_device_characteristics,
                                           x_shm_map,
                                           x_shm_lock,
                                           x_shm_barrier,
                                           x_shm_unmap,
                                           x_fetch,
                                           x_unfetch};
        static const sqlite3_io_methods v1{1,
                                           x_close,
                                           x_read,
                                           x_write,
                                           x_truncate,
                                           x_sync,
                                           x_file_size,
                                           x_lock,
                                           x_unlock,
                                           x_check_reserved,
                                           x_file_control,
                                           x_sector_size,
                                           x_device_characteristics,
                                           nullptr,
                                           nullptr,
                                           nullptr,
                                           nullptr,
                                           nullptr,
                                           nullptr};
        return version >= 3 ? &v3 : &v1;
    }

    static int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
        PageChecksums* sums =
            (flags & SQLITE_OPEN_MAIN_DB) != 0 && name != nullptr ? PageChecksums::registry().find(name) : nullptr;
        // The default VFS now (a test may have installed its own since), if its files fit.
        sqlite3_vfs* b = sqlite3_vfs_find(nullptr);
        if (b == nullptr || b->szOsFile > base()->szOsFile + slack) b = base();
        if (sums == nullptr) return b->xOpen(b, name, f, flags, out_flags); // not ours: the base file itself
        auto* file = reinterpret_cast<File*>(f);
        file->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(File));
        file->sums = sums;
        file->base.pMethods = nullptr;
        const int rc = b->xOpen(b, name, file->real, flags, out_flags);
        if (file->real->pMethods != nullptr) file->base.pMethods = methods(file->real->pMethods->iVersion);
        return rc;
    }

    /// Registers the VFS once; returns its name.
    static const char* install() {
        static const char* name = [] {
            static sqlite3_vfs vfs{};
            sqlite3_vfs* b = sqlite3_vfs_find(nullptr);
            base() = b;
            vfs = *b;
            vfs.zName = "connpool-page-checksums";
            vfs.szOsFile = static_cast<int>(sizeof(File)) + b->szOsFile + slack;
            vfs.pNext = nullptr;
            vfs.xOpen = x_open;
            sqlite3_vfs_register(&vfs, 0);
            return vfs.zName;
        }();
        return name;
    }
};

inline const char* PageChecksums::vfs_name() { return ChecksumVfs::install(); }

} // namespace connpool::sqlite::detail
