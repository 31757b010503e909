// io::TempFile, publish and remove_stale_temps on a real file system: owner-only and locked
// while written, never clobbering with Publish::no_replace, a sweep that removes the temps of
// dead writers (a SIGKILLed child process among them) but never a locked one; and, through the
// io::Syscalls seam, file systems without renameat2 or hard links and a failing directory fsync.
#include <connpool/io/durable_file.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include "io_fixtures.hpp"

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

namespace fs = std::filesystem;
namespace io = connpool::io;
using connpool::testing::file_bytes;
using connpool::testing::file_mode;
using connpool::testing::temp_files;
using connpool::testing::write_file;

namespace {

class IoDurableFile : public connpool::testing::IoTest {
protected:
    static void write_all(const io::TempFile& temp, const std::string& bytes) { IoTest::write_all(temp.fd(), bytes); }

    /// Publishes "first" at dest_ with Publish::no_replace, then expects a second no-replace
    /// publish to fail with EEXIST naming dest_, leaving "first" (an owner-only file) in place.
    void expect_no_replace_publishes_once_and_never_clobbers() {
        {
            io::TempFile temp(dest_, io::Publish::no_replace);
            write_all(temp, "first");
            temp.sync();
            temp.publish();
        }
        EXPECT_EQ(file_bytes(dest_), "first");
        EXPECT_EQ(file_mode(dest_), 0600u);
        {
            io::TempFile temp(dest_, io::Publish::no_replace);
            write_all(temp, "second");
            try {
                temp.publish();
                ADD_FAILURE() << "published over an existing file";
            } catch (const io::Error& e) {
                EXPECT_EQ(e.code(), EEXIST);
                EXPECT_THAT(e.what(), HasSubstr(dest_.string()));
                EXPECT_THAT(e.what(), HasSubstr("exists"));
            }
        }
        EXPECT_EQ(file_bytes(dest_), "first");
    }
};

} // namespace

TEST_F(IoDurableFile, temp_file_is_owner_only_locked_beside_the_destination_and_removed_unless_published) {
    fs::path path;
    {
        io::TempFile temp(dest_, io::Publish::no_replace);
        path = temp.path();
        EXPECT_EQ(path.parent_path(), dir_.path());
        EXPECT_THAT(path.filename().string(), ::testing::StartsWith(".backup.bin.tmp-"));
        EXPECT_EQ(file_mode(path), 0600u);
        EXPECT_FALSE(lockable(path)) << "a temp file being written must be locked";
        write_all(temp, "partial");
    }
    EXPECT_FALSE(fs::exists(path));
    EXPECT_FALSE(fs::exists(dest_));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

TEST_F(IoDurableFile, publish_gives_the_final_name_and_no_replace_never_clobbers_a_file) {
    expect_no_replace_publishes_once_and_never_clobbers();
    {
        io::TempFile temp(dest_, io::Publish::replace);
        write_all(temp, "third");
        temp.publish();
    }
    EXPECT_EQ(file_bytes(dest_), "third");
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

TEST_F(IoDurableFile, a_temp_file_in_a_directory_that_cannot_hold_files_fails_naming_it) {
    // /proc takes no new files, for root too.
    try {
        io::TempFile temp("/proc/connpool-io-test.bin", io::Publish::replace);
        ADD_FAILURE() << "created a file in /proc";
    } catch (const io::Error& e) {
        EXPECT_THAT(e.what(), HasSubstr("/proc"));
        EXPECT_NE(e.code(), 0);
    }
}

TEST_F(IoDurableFile, sweep_removes_unlocked_temps_of_the_destination_only_and_spares_locked_ones) {
    write_file(dir_ / ".backup.bin.tmp-Stale1", "stale");
    write_file(dir_ / ".backup.bin.tmp-Stale1-journal", "stale journal");
    write_file(dir_ / ".other.bin.tmp-Stale2", "someone else's");
    write_file(dir_ / "backup.bin", "the real file");
    io::TempFile live(dest_, io::Publish::replace, {"-journal"});
    EXPECT_EQ(io::remove_stale_temps(dest_, {"-journal"}), 1u);
    EXPECT_TRUE(fs::exists(live.path())) << "the sweep removed a temp file that is being written";
    EXPECT_FALSE(fs::exists(dir_ / ".backup.bin.tmp-Stale1"));
    EXPECT_FALSE(fs::exists(dir_ / ".backup.bin.tmp-Stale1-journal"));
    EXPECT_TRUE(fs::exists(dir_ / ".other.bin.tmp-Stale2"));
    EXPECT_EQ(file_bytes(dir_ / "backup.bin"), "the real file");
}

TEST_F(IoDurableFile, a_companion_left_without_its_temp_file_is_swept_too) {
    // A writer or a sweep killed between removing a temp file and removing its companions leaves
    // the companion alone (seen in the SQLite crash test: ".backup.db.tmp-XXXXXX-wal"); the
    // next sweep removes it. A live temp file's companions stay.
    write_file(dir_ / ".backup.bin.tmp-Orphan-wal", "a stale temp database's WAL");
    write_file(dir_ / ".backup.bin.tmp-Orphan-shm", "its shared memory");
    write_file(dir_ / ".backup.bin.tmp-Orphan-unknown", "not a companion the caller named");
    io::TempFile live(dest_, io::Publish::replace, {"-wal", "-shm"});
    write_file(live.path().string() + "-wal", "the live writer's WAL");
    EXPECT_EQ(io::remove_stale_temps(dest_, {"-wal", "-shm"}), 0u) << "it counts temp files, not companions";
    EXPECT_FALSE(fs::exists(dir_ / ".backup.bin.tmp-Orphan-wal"));
    EXPECT_FALSE(fs::exists(dir_ / ".backup.bin.tmp-Orphan-shm"));
    EXPECT_TRUE(fs::exists(dir_ / ".backup.bin.tmp-Orphan-unknown"));
    EXPECT_TRUE(fs::exists(live.path().string() + "-wal")) << "the sweep removed a live writer's companion";
}

TEST_F(IoDurableFile, the_temp_of_a_sigkilled_writer_is_stale_and_the_sweep_removes_it) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // Only async-signal-safe work before the kill would be ideal; a TempFile is open(),
        // flock() and a mutex in a fresh process, which is fine after fork in this
        // single-threaded test.
        io::TempFile temp(dest_, io::Publish::replace);
        const char byte = 'r';
        (void)::write(ready[1], &byte, 1);
        for (;;) ::pause();
    }
    ::close(ready[1]);
    char byte = 0;
    ASSERT_EQ(::read(ready[0], &byte, 1), 1);
    ::close(ready[0]);
    ASSERT_THAT(temp_files(dir_.path()), SizeIs(1));
    const fs::path left = dir_ / temp_files(dir_.path()).front();
    EXPECT_EQ(io::remove_stale_temps(dest_), 0u) << "the writer is alive and holds its lock";
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(fs::exists(left)) << "a killed writer cannot clean up";
    EXPECT_EQ(io::remove_stale_temps(dest_), 1u);
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

TEST_F(IoDurableFile, a_destination_name_of_255_characters_gets_a_temp_name_within_name_max) {
    const fs::path long_dest = dir_ / std::string(255, 'n');
    const std::string prefix = io::temp_prefix(long_dest);
    EXPECT_LE(prefix.size() + 6 + 8, 255u) << "temp name plus '-journal' must fit in NAME_MAX";
    EXPECT_NE(io::temp_prefix(dir_ / (std::string(254, 'n') + "a")),
              io::temp_prefix(dir_ / (std::string(254, 'n') + "b")))
        << "two long names that share their start must not share temp files";
    {
        io::TempFile temp(long_dest, io::Publish::no_replace);
        write_all(temp, "long");
        temp.publish();
    }
    EXPECT_EQ(file_bytes(long_dest), "long");
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

// ---- file systems this machine may not have (io::Syscalls answers as their kernels do) -------

TEST_F(IoDurableFile, without_renameat2_no_replace_publishes_by_hard_link_and_still_never_clobbers) {
    const io::ScopedSyscalls fs_without(connpool::testing::without_renameat2());
    expect_no_replace_publishes_once_and_never_clobbers();
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty()) << "the link fallback left its temp name behind";
}

TEST_F(IoDurableFile, without_renameat2_or_hard_links_no_replace_fails_before_anything_is_written) {
    const io::ScopedSyscalls fs_without(connpool::testing::without_renameat2_or_hard_links());
    write_file(dest_, "the old file");
    try {
        io::TempFile temp(dest_, io::Publish::no_replace);
        ADD_FAILURE() << "a temp file for a publish that cannot happen was created";
    } catch (const io::Error& e) {
        EXPECT_EQ(e.code(), EPERM);
        EXPECT_THAT(e.what(), HasSubstr(dest_.string()));
        EXPECT_THAT(e.what(), HasSubstr("neither renameat2(RENAME_NOREPLACE) nor hard links"));
        EXPECT_THAT(e.what(), HasSubstr("allow replacing"));
    }
    EXPECT_EQ(file_bytes(dest_), "the old file");
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    // Replacing needs neither, so it still works there.
    {
        io::TempFile temp(dest_, io::Publish::replace);
        write_all(temp, "new");
        temp.sync();
        temp.publish();
    }
    EXPECT_EQ(file_bytes(dest_), "new");
}

TEST_F(IoDurableFile, a_failed_directory_fsync_says_the_file_is_in_place_and_what_is_at_risk) {
    const io::ScopedSyscalls fs_with(connpool::testing::with_failing_directory_fsync());
    io::TempFile temp(dest_, io::Publish::no_replace);
    write_all(temp, "complete");
    temp.sync(); // a file's fsync still works
    try {
        temp.publish();
        ADD_FAILURE() << "a failed directory fsync went unreported";
    } catch (const io::Error& e) {
        EXPECT_EQ(e.code(), EIO);
        EXPECT_THAT(e.what(), HasSubstr(dest_.string()));
        EXPECT_THAT(e.what(), HasSubstr("complete and in place under its final name"));
        EXPECT_THAT(e.what(), HasSubstr("Input/output error"));
    }
    EXPECT_EQ(file_bytes(dest_), "complete") << "what is true: the file is there, whole";
}

TEST_F(IoDurableFile, sync_while_runs_the_work_and_the_flush_and_reports_the_flush_failing) {
    io::TempFile temp(dest_, io::Publish::replace);
    write_all(temp, "bytes");
    bool ran = false;
    temp.sync_while([&] { ran = true; });
    EXPECT_TRUE(ran);
    io::Syscalls failing;
    failing.fsync = [](int) {
        errno = EIO;
        return -1;
    };
    const io::ScopedSyscalls fs_with(failing);
    ran = false;
    try {
        temp.sync_while([&] { ran = true; });
        ADD_FAILURE() << "a failed fsync went unreported";
    } catch (const io::Error& e) {
        EXPECT_EQ(e.code(), EIO);
        EXPECT_THAT(e.what(), HasSubstr(temp.path().string()));
    }
    EXPECT_TRUE(ran);
    // The work's own failure wins (it says what is wrong with the content).
    EXPECT_THROW(temp.sync_while([] { throw std::runtime_error("content"); }), std::runtime_error);
}
