#pragma once

// What a file's first 100 bytes and its companions say about it as a SQLite database, read
// without SQLite: a restore checks its source this way before it opens anything.

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring> // std::strerror
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "../jobs.hpp" // OperationError
#include "error.hpp"

namespace connpool::sqlite::detail {

/// What the header of a database file says.
struct HeaderInfo {
    std::uint32_t page_size = 0;
    std::uint64_t page_count = 0; // 0 when the header's count is not known to be valid
    bool wal = false;             // file format versions 2/2: the database is in WAL mode
};

/// Reads and sanity-checks the header of the would-be SQLite database at `path`; throws an
/// OperationError naming the file and what is wrong with it (`role`: "restore source").
inline HeaderInfo read_header(const std::filesystem::path& path, std::string_view role = "restore source") {
    namespace fs = std::filesystem;
    const std::string who = std::string(role) + " " + quoted(path);
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (!fs::exists(status)) throw OperationError(who + " does not exist");
    if (!fs::is_regular_file(status)) throw OperationError(who + " is not a regular file");
    const auto size = fs::file_size(path, ec);
    if (ec) throw OperationError("cannot read " + who + ": " + ec.message());
    if (size == 0) throw OperationError(who + " is empty");

    std::array<unsigned char, 100> header{};
    std::ifstream in(path, std::ios::binary);
    if (!in) throw OperationError("cannot read " + who + ": " + std::strerror(errno));
    in.read(reinterpret_cast<char*>(header.data()), static_cast<std::streamsize>(header.size()));
    static constexpr std::string_view magic{"SQLite format 3\0", 16};
    if (in.gcount() < 16 || std::string_view(reinterpret_cast<const char*>(header.data()), 16) != magic)
        throw OperationError(who + " is not a SQLite database (no SQLite header)");
    if (in.gcount() < static_cast<std::streamsize>(header.size()))
        throw OperationError(who + " is truncated (" + std::to_string(size) + " bytes, shorter than a SQLite header)");

    auto be32 = [&](std::size_t at) {
        return (std::uint32_t{header[at]} << 24) | (std::uint32_t{header[at + 1]} << 16) |
               (std::uint32_t{header[at + 2]} << 8) | std::uint32_t{header[at + 3]};
    };
    HeaderInfo info;
    const std::uint32_t raw_page_size = (std::uint32_t{header[16]} << 8) | header[17];
    info.page_size = raw_page_size == 1 ? 65536 : raw_page_size;
    if (info.page_size < 512 || info.page_size > 65536 || (info.page_size & (info.page_size - 1)) != 0)
        throw OperationError(who + " is not a valid SQLite database (page size " + std::to_string(raw_page_size) + ")");
    info.wal = header[18] == 2 && header[19] == 2;
    // The page count in the header is valid only when its change counter matches (SQLite >= 3.7.0).
    if (be32(24) == be32(92) && be32(28) != 0) info.page_count = be32(28);
    const std::uint64_t expected = info.page_count * info.page_size;
    if (size < expected)
        throw OperationError(who + " is truncated (" + std::to_string(size) + " bytes; its header says " +
                             std::to_string(info.page_count) + " pages of " + std::to_string(info.page_size) +
                             " bytes)");
    if (size % info.page_size != 0)
        throw OperationError(who + " is not a whole number of pages: it has " + std::to_string(size % info.page_size) +
                             " bytes after its last whole page (page " + std::to_string(size / info.page_size) +
                             ", pages of " + std::to_string(info.page_size) +
                             " bytes), which SQLite never writes; something other than SQLite appended to it");
    return info;
}

/// Throws an OperationError when `path` has a hot rollback journal beside it: the database is
/// mid-transaction as a crashed writer left it, and only a read-write open rolls it back.
inline void refuse_hot_journal(const std::filesystem::path& path, std::string_view role = "restore source") {
    const std::filesystem::path journal = path.string() + "-journal";
    std::ifstream in(journal, std::ios::binary);
    if (!in) return;
    static constexpr std::array<unsigned char, 8> magic{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
    std::array<unsigned char, 8> head{};
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    if (in.gcount() != static_cast<std::streamsize>(head.size()) || head != magic) return; // empty, zeroed or foreign
    throw OperationError(std::string(role) + " " + quoted(path) + " has a hot journal " + quoted(journal) +
                         ": a writer stopped mid-transaction and the file is not consistent until SQLite rolls that "
                         "back; open it read-write once with sqlite3 (e.g. `sqlite3 " +
                         path.string() + " 'PRAGMA quick_check'`), then restore");
}

} // namespace connpool::sqlite::detail
