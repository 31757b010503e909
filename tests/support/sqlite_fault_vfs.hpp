#pragma once

// A test VFS in the manner of SQLite's own test_vfs.c / test_devsym.c: it wraps the default VFS,
// becomes the default itself, and fails chosen reads, writes or syncs of chosen files with a
// chosen SQLite error (SQLITE_FULL for a full disk, SQLITE_IOERR_WRITE, ...). So disk-full and
// I/O-error paths are tested without root, mounts or real full disks.
//
// Thread-safety: the plan is guarded by one mutex; arm it before the operation starts.

#include <connpool/sqlite/vfs_shim.hpp>

#include <sqlite3.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <string_view>

namespace connpool::testing {

/// Which file operations a FaultPlan fails.
enum class FaultOp { write, sync, read };

/// What to fail: operation `op` on files whose path contains `file_contains`, once `skip` such
/// operations have passed, with `rc`. For writes, only those ending past `beyond_bytes` count
/// (a disk that is full beyond the file's current size); `times` < 0 = every later one.
struct FaultPlan {
    std::string file_contains;
    /// When true, the path must end with `file_contains` (the database, not its journal).
    bool suffix = false;
    FaultOp op = FaultOp::write;
    int rc = SQLITE_FULL;
    int skip = 0;
    int times = -1;
    std::uint64_t beyond_bytes = 0;
    /// Instead of failing a write, store it with one byte flipped and report success: a disk or
    /// driver that corrupts data silently.
    bool corrupt = false;
};

class FaultVfs : private connpool::sqlite::detail::ForwardingIo<FaultVfs> {
public:
    /// Installs the fault VFS as the default (once per process) and arms `plan` until the
    /// returned guard is destroyed.
    class Armed {
    public:
        explicit Armed(FaultPlan plan) {
            install();
            std::lock_guard lock(state().mu);
            state().plan = std::move(plan);
            state().armed = true;
            state().seen = 0;
            state().failed = 0;
        }
        Armed(const Armed&) = delete;
        Armed& operator=(const Armed&) = delete;
        ~Armed() { disarm(); }
        /// Stops failing (the "disk" has room again).
        void disarm() {
            std::lock_guard lock(state().mu);
            state().armed = false;
        }
        /// Returns how many operations were failed.
        [[nodiscard]] int failures() const {
            std::lock_guard lock(state().mu);
            return state().failed;
        }
    };

private:
    struct State {
        std::mutex mu;
        FaultPlan plan;
        bool armed = false;
        int seen = 0;
        int failed = 0;
        sqlite3_vfs* real = nullptr;
        sqlite3_vfs vfs{};
    };
    static State& state() {
        static State s;
        return s;
    }

    // The forwarding base builds the method table from the x_ functions below and its own.
    friend struct connpool::sqlite::detail::ForwardingIo<FaultVfs>;
    using Io = connpool::sqlite::detail::ForwardingIo<FaultVfs>;

    struct File {
        connpool::sqlite::detail::ShimFile shim;
        char name[600];
    };

    /// Returns the error to inject into this operation, or SQLITE_OK.
    static int fault(sqlite3_file* f, FaultOp op, std::uint64_t end) {
        State& s = state();
        std::lock_guard lock(s.mu);
        if (!s.armed || s.plan.op != op) return SQLITE_OK;
        const std::string_view name = reinterpret_cast<File*>(f)->name;
        if (s.plan.suffix ? !(name.size() >= s.plan.file_contains.size() &&
                              name.substr(name.size() - s.plan.file_contains.size()) == s.plan.file_contains)
                          : name.find(s.plan.file_contains) == std::string_view::npos)
            return SQLITE_OK;
        if (op == FaultOp::write && end <= s.plan.beyond_bytes) return SQLITE_OK;
        if (s.seen++ < s.plan.skip) return SQLITE_OK;
        if (s.plan.times >= 0 && s.failed >= s.plan.times) return SQLITE_OK;
        ++s.failed;
        return s.plan.rc;
    }

    static int x_read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
        if (const int rc = fault(f, FaultOp::read, static_cast<std::uint64_t>(off + n)); rc != SQLITE_OK) return rc;
        return real(f)->pMethods->xRead(real(f), p, n, off);
    }
    static int x_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
        if (const int rc = fault(f, FaultOp::write, static_cast<std::uint64_t>(off + n)); rc != SQLITE_OK) {
            if (!corrupting()) return rc;
            std::string bad(static_cast<const char*>(p), static_cast<std::size_t>(n));
            bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x5A);
            return real(f)->pMethods->xWrite(real(f), bad.data(), n, off);
        }
        return real(f)->pMethods->xWrite(real(f), p, n, off);
    }
    static int x_sync(sqlite3_file* f, int flags) {
        if (const int rc = fault(f, FaultOp::sync, 0); rc != SQLITE_OK) return rc;
        return real(f)->pMethods->xSync(real(f), flags);
    }
    // No memory-mapped I/O: every read goes through xRead, where faults are injected.
    static int x_fetch(sqlite3_file*, sqlite3_int64, int, void** out) {
        *out = nullptr;
        return SQLITE_OK;
    }
    static int x_unfetch(sqlite3_file*, sqlite3_int64, void*) { return SQLITE_OK; }
    static bool corrupting() {
        std::lock_guard lock(state().mu);
        return state().plan.corrupt;
    }

    static int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
        auto* file = reinterpret_cast<File*>(f);
        std::memset(file->name, 0, sizeof file->name);
        if (name != nullptr) std::strncpy(file->name, name, sizeof file->name - 1);
        return Io::open_wrapped(state().real, name, f, flags, out_flags);
    }

    static void install() {
        static std::once_flag once;
        std::call_once(once, [] {
            State& s = state();
            s.real = sqlite3_vfs_find(nullptr);
            s.vfs = Io::wrap(*s.real, "connpool-fault", x_open);
            s.vfs.iVersion = 2; // no xGetSystemCall & co: those would bypass the wrapper
            sqlite3_vfs_register(&s.vfs, 1);
        });
    }
};

} // namespace connpool::testing
