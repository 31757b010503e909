#pragma once

// The plumbing of a wrapping SQLite VFS ("shim"), shared by the page-checksum VFS and the tests'
// fault-injecting VFS: a file object that holds the wrapped VFS's file right behind itself, an
// I/O method table that forwards every call to it, and an xOpen that opens the wrapped file and
// installs the table. A shim only writes the calls it intercepts.
//
// Design: ForwardingIo<Derived> is CRTP over static functions. The method table names
// `&Derived::x_...`, so a function Derived declares hides the forwarding one of the same name and
// lands in the table, and every other slot forwards. The table's version follows the wrapped
// file's (1 or 3), so a shim never offers shared memory or mmap the real file does not have.

#include <sqlite3.h>

namespace connpool::sqlite::detail {

/// The start of every shim file: SQLite's base object, then the wrapped file. A shim's own file
/// struct has this as its first member; the wrapped file lives right after the shim's struct, in
/// the szOsFile bytes SQLite allocates.
struct ShimFile {
    /// What SQLite sees; its pMethods is the shim's table.
    sqlite3_file base;
    /// The wrapped VFS's file.
    sqlite3_file* real;
};

/// Forwarding I/O methods for a shim whose file struct is `Derived::File` (see the file comment).
template <class Derived>
struct ForwardingIo {
    /// Returns the wrapped file behind the shim file `f`.
    static sqlite3_file* real(sqlite3_file* f) { return reinterpret_cast<ShimFile*>(f)->real; }

    static int x_close(sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); }
    static int x_read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
        return real(f)->pMethods->xRead(real(f), p, n, off);
    }
    static int x_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
        return real(f)->pMethods->xWrite(real(f), p, n, off);
    }
    static int x_truncate(sqlite3_file* f, sqlite3_int64 size) { return real(f)->pMethods->xTruncate(real(f), size); }
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
    static int x_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
        return real(f)->pMethods->xFetch(real(f), off, n, out);
    }
    static int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
        return real(f)->pMethods->xUnfetch(real(f), off, p);
    }

    /// Returns the shim's method table for a wrapped file of I/O methods `version`.
    static const sqlite3_io_methods* methods(int version) {
        static const sqlite3_io_methods v3{3,
                                           &Derived::x_close,
                                           &Derived::x_read,
                                           &Derived::x_write,
                                           &Derived::x_truncate,
                                           &Derived::x_sync,
                                           &Derived::x_file_size,
                                           &Derived::x_lock,
                                           &Derived::x_unlock,
                                           &Derived::x_check_reserved,
                                           &Derived::x_file_control,
                                           &Derived::x_sector_size,
                                           &Derived::x_device_characteristics,
                                           &Derived::x_shm_map,
                                           &Derived::x_shm_lock,
                                           &Derived::x_shm_barrier,
                                           &Derived::x_shm_unmap,
                                           &Derived::x_fetch,
                                           &Derived::x_unfetch};
        static const sqlite3_io_methods v1 = [] {
            sqlite3_io_methods m = v3;
            m.iVersion = 1;
            m.xShmMap = nullptr;
            m.xShmLock = nullptr;
            m.xShmBarrier = nullptr;
            m.xShmUnmap = nullptr;
            m.xFetch = nullptr;
            m.xUnfetch = nullptr;
            return m;
        }();
        return version >= 3 ? &v3 : &v1;
    }

    /// Opens `name` with the wrapped VFS `inner` into the shim file `f` (a `Derived::File`, whose
    /// own fields the caller fills) and installs the shim's methods when the open succeeded.
    static int open_wrapped(sqlite3_vfs* inner, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
        auto* shim = reinterpret_cast<ShimFile*>(f);
        shim->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(typename Derived::File));
        shim->base.pMethods = nullptr;
        const int rc = inner->xOpen(inner, name, shim->real, flags, out_flags);
        if (shim->real->pMethods != nullptr) shim->base.pMethods = methods(shim->real->pMethods->iVersion);
        return rc;
    }

    /// Returns a VFS named `name` that is `inner` with the shim's xOpen and room for its files
    /// (plus `slack` bytes, for an inner VFS swapped in later whose files are a little larger).
    static sqlite3_vfs wrap(const sqlite3_vfs& inner, const char* name,
                            int (*x_open)(sqlite3_vfs*, sqlite3_filename, sqlite3_file*, int, int*), int slack = 0) {
        sqlite3_vfs vfs = inner;
        vfs.zName = name;
        vfs.szOsFile = static_cast<int>(sizeof(typename Derived::File)) + inner.szOsFile + slack;
        vfs.pNext = nullptr;
        vfs.xOpen = x_open;
        return vfs;
    }
};

} // namespace connpool::sqlite::detail
