// The table backup file the adapters share (io/table_file*.hpp): PostgreSQL's files written
// before the format moved to io/ (tests/data/pg_table_v1_*.copy) still read and are written
// byte for byte the same; another adapter's format round-trips through the same writer and
// reader; damaged, truncated, empty and foreign files are refused naming the file and the
// reason, without leaking a descriptor. No server: the files are written here.
#include <connpool/io/table_file.hpp>
#include <connpool/postgres/table_file.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>

#include "io_fixtures.hpp"

using ::testing::HasSubstr;

namespace fs = std::filesystem;
namespace io = connpool::io;
namespace pg = connpool::postgres;
using connpool::testing::file_bytes;
using connpool::testing::write_file;

namespace {

const fs::path table_file_data_dir = CONNPOOL_TEST_DATA_DIR;

/// The header the fixtures were written with.
pg::TableFileHeader fixture_header(pg::Compression compression) {
    pg::TableFileHeader h;
    h.schema = "public";
    h.table = "Mixed \"Case\" table";
    h.columns = {{"id", "integer"}, {"note", "text"}, {"price", "numeric(10,2)"}, {"tags", "text[]"}};
    h.server_version = "15.14 (Debian 15.14-0+deb12u1)";
    h.server_version_num = 150014;
    h.encoding = "UTF8";
    h.format = pg::CopyFormat::text;
    h.compression = compression;
    return h;
}

/// The COPY text the fixtures hold: 301 rows with escapes, UTF-8 and NULLs.
std::string fixture_rows() {
    std::string rows;
    for (int i = 0; i < 300; ++i)
        rows += std::to_string(i) + "\tnote " + std::to_string(i * 7) + " tab\\there \\\\ é ✓\t" + std::to_string(i) +
                ".25\t{a,\"b c\"}\n";
    return rows + "300\t\\N\t\\N\t{}\n";
}

fs::path fixture_path(pg::Compression compression) {
    return table_file_data_dir / (compression == pg::Compression::zstd ? "pg_table_v1_zstd.copy" : "pg_table_v1_none.copy");
}

/// Writes the fixtures' content the way backup_table does (two data calls, then the trailer).
void write_pg_file(const fs::path& path, pg::Compression compression) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    {
        pg::detail::TableFileWriter writer(fd, path, fixture_header(compression), 1);
        const std::string rows = fixture_rows();
        writer.data(rows.data(), 1000);
        writer.data(rows.data() + 1000, rows.size() - 1000);
        writer.finish(301);
    }
    ::close(fd);
}

std::string read_all(pg::detail::TableFileReader& reader) {
    std::string out;
    EXPECT_TRUE(reader.read_data([&](const char* p, std::size_t n) {
        out.append(p, n);
        return true;
    }));
    return out;
}

std::size_t open_descriptors() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

class IoTableFile : public connpool::testing::IoTest {};

TEST_F(IoTableFile, postgres_files_written_before_the_shared_layer_still_read) {
    for (const auto compression : {pg::Compression::none, pg::Compression::zstd}) {
        SCOPED_TRACE(fixture_path(compression).string());
        pg::detail::TableFileReader reader(fixture_path(compression));
        const pg::TableFileHeader& h = reader.header();
        const pg::TableFileHeader want = fixture_header(compression);
        EXPECT_EQ(h.schema, want.schema);
        EXPECT_EQ(h.table, want.table);
        EXPECT_EQ(h.columns, want.columns);
        EXPECT_EQ(h.server_version, want.server_version);
        EXPECT_EQ(h.server_version_num, want.server_version_num);
        EXPECT_EQ(h.encoding, want.encoding);
        EXPECT_EQ(h.format, pg::CopyFormat::text);
        EXPECT_EQ(h.compression, compression);
        EXPECT_EQ(reader.rows(), 301u);
        EXPECT_EQ(reader.data_bytes(), fixture_rows().size());
        EXPECT_EQ(read_all(reader), fixture_rows());
    }
}

TEST_F(IoTableFile, postgres_files_are_written_byte_for_byte_as_before) {
    for (const auto compression : {pg::Compression::none, pg::Compression::zstd}) {
        SCOPED_TRACE(fixture_path(compression).string());
        const fs::path path = dir_ / "written.copy";
        write_pg_file(path, compression);
        // The zstd fixture was written by Debian 12's libzstd 1.5.4 at level 1.
        EXPECT_EQ(file_bytes(path), file_bytes(fixture_path(compression))) << "libzstd " << ZSTD_versionString();
    }
}

TEST_F(IoTableFile, refusing_a_file_leaks_no_descriptor) {
    const fs::path empty = dir_ / "empty.copy", foreign = dir_ / "foreign.copy", truncated = dir_ / "truncated.copy";
    write_file(empty, "");
    write_file(foreign, "PGDMP not ours\n");
    std::string bytes = file_bytes(fixture_path(pg::Compression::none));
    write_file(truncated, bytes.substr(0, bytes.size() - 10));
    const std::size_t before = open_descriptors();
    for (int i = 0; i < 50; ++i)
        for (const auto& path : {empty, foreign, truncated})
            EXPECT_THROW(pg::detail::TableFileReader{path}, io::Error);
    EXPECT_EQ(open_descriptors(), before);
}

TEST_F(IoTableFile, damaged_truncated_grown_and_empty_files_are_refused_naming_the_file) {
    const std::string good = file_bytes(fixture_path(pg::Compression::none));
    struct Case {
        const char* name;
        std::string bytes;
        const char* why;
        bool at_open; // refused when opened, else when its data is read
    };
    std::string flipped = good;
    flipped[good.size() / 2] ^= 0x20;
    const Case cases[] = {
        {"empty", "", "the file is empty", true},
        {"not ours", "hello\n", "it is not a connpool table backup (no 'connpool-pg-table' magic)", true},
        {"next version", "connpool-pg-table 2\n{}\n", "it has another format version (this library reads 1)", true},
        {"header cut", good.substr(0, 60), "its header is incomplete", true},
        {"no trailer", good.substr(0, good.size() - 30), "it has no valid trailer", true},
        {"grown", good + "x", "it has no valid trailer", true},
        {"flipped byte", flipped, "it does not match its checksum", false},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        const fs::path path = dir_ / (std::string(c.name) + ".copy");
        write_file(path, c.bytes);
        try {
            pg::detail::TableFileReader reader(path);
            ASSERT_FALSE(c.at_open) << "opened";
            (void)reader.read_data([](const char*, std::size_t) { return true; });
            ADD_FAILURE() << "read without complaint";
        } catch (const io::Error& e) {
            EXPECT_THAT(e.what(), HasSubstr("table backup '" + path.string() + "' is unusable: " + c.why));
            EXPECT_EQ(e.code(), EINVAL);
        }
    }
}

/// A format of another adapter: its own magic and header fields, opaque rows.
constexpr io::TableFileFormat test_format{"connpool-test-table", 1};

io::TableFileReader open_test_file(const fs::path& path, std::string& table) {
    return io::TableFileReader(path, test_format, [&](const nlohmann::json& fields, const io::TableFileReader&) {
        table = fields.at("table").get<std::string>();
        return io::RowFraming::opaque;
    });
}

TEST_F(IoTableFile, another_adapters_format_round_trips_through_the_same_layer) {
    std::string data;
    for (int i = 0; i < 256; ++i) data += static_cast<char>(i); // no row framing: any bytes
    for (const auto compression : {io::Compression::none, io::Compression::zstd}) {
        const int fd = ::open(dest_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0);
        io::FileDigest written;
        {
            io::TableFileWriter writer(fd, dest_, test_format, {{"table", "t`1"}}, compression, 3);
            for (int i = 0; i < 1000; ++i) writer.data(data.data(), data.size());
            writer.finish(7);
            written = writer.file_digest();
        }
        ::close(fd);
        EXPECT_EQ(written, io::digest_file(dest_)); // what a set's manifest records without reading the file
        EXPECT_EQ(file_bytes(dest_).rfind("connpool-test-table 1\n{\"checksum\":\"xxh3-64\",\"compression\":", 0), 0u);
        std::string table;
        io::TableFileReader reader = open_test_file(dest_, table);
        EXPECT_EQ(table, "t`1");
        EXPECT_EQ(reader.compression(), compression);
        EXPECT_EQ(reader.rows(), 7u);
        EXPECT_EQ(reader.data_bytes(), 256'000u);
        std::string back;
        EXPECT_TRUE(reader.read_data([&](const char* p, std::size_t n) {
            back.append(p, n);
            return true;
        }));
        ASSERT_EQ(back.size(), 256'000u);
        EXPECT_EQ(back.substr(0, 256), data);
        EXPECT_EQ(back.substr(back.size() - 256), data);
    }
}

TEST_F(IoTableFile, a_file_of_another_adapter_is_refused_naming_both_formats) {
    std::string table;
    const fs::path path = fixture_path(pg::Compression::none);
    try {
        (void)open_test_file(path, table);
        ADD_FAILURE() << "opened a PostgreSQL file as another format";
    } catch (const io::Error& e) {
        EXPECT_THAT(e.what(), HasSubstr("table backup '" + path.string() +
                                        "' is unusable: it is a 'connpool-pg-table' file, not a 'connpool-test-table' one"));
    }
}

TEST_F(IoTableFile, a_pulled_pass_gives_the_same_data_and_the_same_checks_as_read_data) {
    // Long runs of one byte (zstd turns 128 KiB into a few bytes) between pseudo-random bytes, so
    // chunks end anywhere in a frame; and a damaged copy, which the pull must refuse at its end.
    std::string data;
    std::uint32_t x = 12345;
    for (int run = 0; run < 40; ++run) {
        data.append(static_cast<std::size_t>(70'000 + run * 9'001), static_cast<char>('a' + run % 26));
        for (int i = 0; i < 50'000; ++i) data += static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
    }
    for (const auto compression : {io::Compression::none, io::Compression::zstd}) {
        SCOPED_TRACE(io::detail::compression_name(compression));
        const int fd = ::open(dest_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0);
        {
            io::TableFileWriter writer(fd, dest_, test_format, {{"table", "t"}}, compression, 1);
            writer.data(data.data(), data.size());
            writer.finish(0);
        }
        ::close(fd);
        std::string table;
        io::TableFileReader reader = open_test_file(dest_, table);
        std::string pulled;
        io::TableFileReader::Pass pass(reader);
        for (std::string_view chunk; !(chunk = pass.next()).empty();) pulled.append(chunk);
        EXPECT_TRUE(pulled == data) << pulled.size() << " bytes pulled of " << data.size();
        EXPECT_TRUE(pass.next().empty()); // and stays at the end

        std::string bytes = file_bytes(dest_);
        bytes[bytes.size() / 2] ^= 1;
        write_file(dest_, bytes);
        io::TableFileReader damaged = open_test_file(dest_, table);
        io::TableFileReader::Pass bad(damaged);
        EXPECT_THROW(
            {
                while (!bad.next().empty()) {
                }
            },
            io::Error);
    }
}

} // namespace

TEST(IoTableFileRows, newlines_are_counted_exactly_whatever_their_density_and_alignment) {
    // Every byte a newline (the densest a 2040-byte round can be), none, and pseudo-random mixes,
    // at every offset and length around the 8-byte words and the 255-word rounds.
    std::string data(3 * 8 * 255 + 37, '\n');
    std::uint32_t x = 777;
    std::string mixed(data.size(), 'a');
    for (auto& c : mixed) c = ((x = x * 1664525u + 1013904223u) >> 29) == 0 ? '\n' : static_cast<char>(x >> 24);
    for (const std::string* buffer : {&data, &mixed}) {
        for (std::size_t from = 0; from < 9; ++from)
            for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9},
                                        std::size_t{2039}, std::size_t{2040}, std::size_t{2041}, buffer->size() - from}) {
                const char* p = buffer->data() + from;
                ASSERT_EQ(io::detail::count_newlines(p, n), static_cast<std::uint64_t>(std::count(p, p + n, '\n')))
                    << "from " << from << ", " << n << " bytes";
            }
    }
    EXPECT_EQ(io::detail::count_newlines(std::string(8, 'x').data(), 8), 0u);
}
