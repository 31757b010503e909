#pragma once

// Check::pages: a checksum (XXH3-64) of every page as SQLite writes it into a backup file,
// compared with the file read back once it is closed. It proves that every page of the file is
// one SQLite wrote from the snapshot (none lost, torn, stale or missing, the size right), at
// the cost of hashing each page twice and one sequential read; a schema read then proves the
// file opens as a database.
//
// Design: a VFS ("connpool-page-checksums", a vfs_shim.hpp shim over the default VFS) records
// the pages. A PageChecksums object registers the path it will open; the VFS looks the path up
// when SQLite opens the main database file and hands that file the object, which only the thread
// using that connection touches. The registry itself is guarded by a mutex. Checksums are kept in
// a vector by page number (8 bytes and a bit per page), and the read-back reads 1 MiB at a time:
// with one pread per page, the system calls cost more than the hashing.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <unistd.h> // pread

#include <sqlite3.h>

#include "../io/checksum.hpp"
#include "../jobs.hpp" // OperationError
#include "error.hpp"
#include "vfs_shim.hpp"

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

    /// Reads the closed file back through `fd` (open for reading; `path` names it in messages)
    /// and throws an OperationError (`what`: the job) unless every page in it was written through
    /// this object and reads back with the same checksum, and no written page is missing.
    void verify(int fd, const std::filesystem::path& path, const std::string& what) const {
        if (page_size_ <= 0) throw OperationError(what + ": verifying the copy failed: no page was written");
        if (odd_write_)
            throw OperationError(what + ": the copy failed its page checksums: SQLite wrote to " + quoted(path) +
                                 " at an offset that is not a page boundary");
        const auto page = static_cast<std::size_t>(page_size_);
        std::vector<unsigned char> buffer(std::max<std::size_t>(page, (std::size_t{1} << 20) / page * page));
        std::uint64_t pages_read = 0;
        std::string problem;
        for (std::size_t filled = 0;;) {
            const ssize_t n = ::pread(fd, buffer.data() + filled, buffer.size() - filled,
                                      static_cast<off_t>(pages_read * page + filled));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                problem = std::string("reading it back failed: ") + std::strerror(errno);
                break;
            }
            filled += static_cast<std::size_t>(n);
            if (n > 0 && filled < buffer.size()) continue; // a short read: fill the buffer first
            const std::size_t whole = filled / page;
            for (std::size_t i = 0; i < whole && problem.empty(); ++i, ++pages_read)
                problem = check_page(pages_read, buffer.data() + i * page);
            if (!problem.empty()) break;
            if (n == 0) { // end of file
                if (filled % page != 0) problem = "it ends inside page " + std::to_string(pages_read + 1);
                break;
            }
            filled = 0;
        }
        if (problem.empty() && pages_read != sums_.size())
            problem = "it has " + std::to_string(pages_read) + " pages, but " + std::to_string(sums_.size()) +
                      " were written";
        if (!problem.empty())
            throw OperationError(what + ": the copy " + quoted(path) + " failed its page checksums: " + problem);
    }

private:
    friend struct ChecksumVfs;

    /// Returns what is wrong with page `index` (0-based) as read back, or "".
    std::string check_page(std::uint64_t index, const unsigned char* data) const {
        if (index >= sums_.size() || !written_[index])
            return "page " + std::to_string(index + 1) + " was never written by the copy";
        if (sums_[index] != io::xxh3(data, static_cast<std::size_t>(page_size_)))
            return "page " + std::to_string(index + 1) + " reads back different from what was written";
        return {};
    }

    void record(const void* data, int size, std::int64_t offset) {
        if (size != page_size_) { // first write, or the page size changed: earlier pages are void
            sums_.clear();
            written_.clear();
            page_size_ = size;
        }
        if (size <= 0 || offset < 0 || offset % size != 0) {
            odd_write_ = true; // SQLite writes a database only in whole pages; verify() refuses this
            return;
        }
        const auto index = static_cast<std::size_t>(offset / size);
        if (index >= sums_.size()) {
            sums_.resize(index + 1);
            written_.resize(index + 1);
        }
        sums_[index] = io::xxh3(data, static_cast<std::size_t>(size));
        written_[index] = true;
    }
    void truncate(std::int64_t size) {
        if (page_size_ <= 0 || size < 0) return;
        // A page that starts before the new end stays (and then fails verify as a torn last page).
        const auto keep = static_cast<std::size_t>((size + page_size_ - 1) / page_size_);
        if (keep < sums_.size()) {
            sums_.resize(keep);
            written_.resize(keep);
        }
    }

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
    bool odd_write_ = false;
    std::vector<std::uint64_t> sums_; // by page index
    std::vector<bool> written_;       // by page index: sums_ holds a real checksum
};

/// The wrapping VFS: forwards everything, and records the pages written to registered files.
/// (SQLite writes through xWrite even with mmap on; mapped reads are forwarded.)
struct ChecksumVfs : ForwardingIo<ChecksumVfs> {
    struct File {
        ShimFile shim;
        PageChecksums* sums;
    };
    static PageChecksums* sums(sqlite3_file* f) { return reinterpret_cast<File*>(f)->sums; }

    static int x_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
        const int rc = real(f)->pMethods->xWrite(real(f), p, n, off);
        if (rc == SQLITE_OK) sums(f)->record(p, n, off);
        return rc;
    }
    static int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
        const int rc = real(f)->pMethods->xTruncate(real(f), size);
        if (rc == SQLITE_OK) sums(f)->truncate(size);
        return rc;
    }

    static constexpr int slack = 1024; // room for a wrapping VFS installed later (tests)
    static sqlite3_vfs*& base() {
        static sqlite3_vfs* b = nullptr;
        return b;
    }

    static int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
        PageChecksums* found =
            (flags & SQLITE_OPEN_MAIN_DB) != 0 && name != nullptr ? PageChecksums::registry().find(name) : nullptr;
        // The default VFS now (a test may have installed its own since), if its files fit.
        sqlite3_vfs* b = sqlite3_vfs_find(nullptr);
        if (b == nullptr || b->szOsFile > base()->szOsFile + slack) b = base();
        if (found == nullptr) return b->xOpen(b, name, f, flags, out_flags); // not ours: the base file itself
        reinterpret_cast<File*>(f)->sums = found;
        return open_wrapped(b, name, f, flags, out_flags);
    }

    /// Registers the VFS once; returns its name.
    static const char* install() {
        static const char* name = [] {
            sqlite3_vfs* b = sqlite3_vfs_find(nullptr);
            base() = b;
            static sqlite3_vfs vfs = wrap(*b, "connpool-page-checksums", x_open, slack);
            sqlite3_vfs_register(&vfs, 0);
            return vfs.zName;
        }();
        return name;
    }
};

inline const char* PageChecksums::vfs_name() { return ChecksumVfs::install(); }

} // namespace connpool::sqlite::detail
