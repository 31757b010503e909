// io::write_manifest / verify_manifest: a backup set's manifest records each file's size and
// XXH3-64, is written atomically, and refuses a set whose files went missing, changed size or
// changed content, or a manifest that is not one this library reads.
#include <connpool/io/manifest.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "io_fixtures.hpp"

using ::testing::HasSubstr;
using ::testing::IsEmpty;

namespace fs = std::filesystem;
namespace io = connpool::io;
using connpool::testing::file_bytes;
using connpool::testing::file_mode;
using connpool::testing::temp_files;
using connpool::testing::write_file;

namespace {

class IoManifest : public connpool::testing::IoTest {
protected:
    void SetUp() override {
        write_file(dir_ / "orders.copy", std::string(100'000, 'o'));
        write_file(dir_ / "customers.copy", "alice\nbob\n");
        io::Manifest m;
        m.files.push_back(io::manifest_entry(dir_.path(), "orders.copy"));
        m.files.push_back(io::manifest_entry(dir_.path(), "customers.copy"));
        io::write_manifest(dir_.path(), m);
    }

    /// Expects verify_manifest to throw an io::Error whose message contains every one of `parts`.
    void expect_refused(std::initializer_list<std::string> parts) {
        try {
            (void)io::verify_manifest(dir_.path());
            ADD_FAILURE() << "the set was accepted";
        } catch (const io::Error& e) {
            for (const auto& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
        }
    }
};

} // namespace

TEST_F(IoManifest, a_written_set_verifies_and_lists_sizes_and_checksums) {
    const io::Manifest m = io::verify_manifest(dir_.path());
    ASSERT_EQ(m.files.size(), 2u);
    EXPECT_EQ(m.format_version, io::Manifest::current_format_version);
    EXPECT_EQ(m.files[0].name, "orders.copy");
    EXPECT_EQ(m.files[0].digest.size, 100'000u);
    EXPECT_EQ(m.files[0].digest, io::digest_file(dir_ / "orders.copy"));
    EXPECT_EQ(file_mode(dir_ / "manifest.json"), 0600u);
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    EXPECT_THAT(file_bytes(dir_ / "manifest.json"), HasSubstr("\"format_version\": 1"));
}

TEST_F(IoManifest, a_verified_entry_carries_the_identity_its_file_kept_while_it_was_read) {
    const io::Manifest m = io::verify_manifest(dir_.path());
    ASSERT_EQ(m.files.size(), 2u);
    for (const auto& f : m.files) {
        SCOPED_TRACE(f.name);
        ASSERT_TRUE(f.checked);
        EXPECT_EQ(f.checked, io::file_identity(dir_ / f.name));
        EXPECT_EQ(f.checked->size, f.digest.size);
    }
    // A file touched after the check (same bytes, another modification time) no longer has that
    // identity: a reader that relies on the check must read it whole again.
    const fs::path touched = dir_ / "customers.copy";
    fs::last_write_time(touched, fs::last_write_time(touched) - std::chrono::seconds(1));
    EXPECT_NE(m.files[1].checked, io::file_identity(touched));
    // What read_manifest returns was never checked.
    EXPECT_FALSE(io::read_manifest(dir_.path()).files[0].checked);
}

TEST_F(IoManifest, a_changed_byte_is_refused_naming_the_file_and_the_checksums) {
    std::fstream f(dir_ / "orders.copy", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(50'000);
    f.put('X');
    f.close();
    expect_refused({(dir_ / "orders.copy").string(), "checksum"});
}

TEST_F(IoManifest, a_missing_or_resized_file_is_refused_naming_it) {
    write_file(dir_ / "customers.copy", "alice\nbob\ncarol\n");
    expect_refused({(dir_ / "customers.copy").string(), "16 bytes", "says 10"});
    fs::remove(dir_ / "orders.copy");
    expect_refused({(dir_ / "orders.copy").string(), "missing"});
}

TEST_F(IoManifest, a_manifest_of_another_format_version_or_not_json_is_refused) {
    std::string text = file_bytes(dir_ / "manifest.json");
    const auto at = text.find("\"format_version\": 1");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 19, "\"format_version\": 7");
    write_file(dir_ / "manifest.json", text);
    expect_refused({"manifest.json", "format version 7"});
    write_file(dir_ / "manifest.json", "{ not json");
    expect_refused({"manifest.json", "not valid JSON"});
    fs::remove(dir_ / "manifest.json");
    expect_refused({dir_.path().string(), "manifest.json"});
}

TEST_F(IoManifest, an_entry_that_points_outside_the_set_is_refused) {
    std::string text = file_bytes(dir_ / "manifest.json");
    const auto at = text.find("\"customers.copy\"");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 16, "\"../../etc/passwd\"");
    write_file(dir_ / "manifest.json", text);
    expect_refused({"../../etc/passwd", "not a file of the set"});
}
