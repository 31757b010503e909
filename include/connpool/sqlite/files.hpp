#pragma once

// Which files belong to a SQLite database: its main file and the companions SQLite keeps beside
// it (-journal, -wal, -shm), none of which may ever be a backup's destination.

#include <array>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <sqlite3.h>

namespace connpool::sqlite::detail {

/// The suffixes of the files SQLite keeps beside a database.
inline constexpr std::array<std::string_view, 3> companion_suffixes{"-journal", "-wal", "-shm"};

/// Returns the path of the file behind `db`'s main database ("" for an in-memory one).
inline std::filesystem::path main_file(sqlite3* db) {
    const char* name = sqlite3_db_filename(db, "main");
    return name != nullptr ? std::filesystem::path(name) : std::filesystem::path();
}

inline bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    std::error_code ec;
    return !a.empty() && !b.empty() && std::filesystem::equivalent(a, b, ec) && !ec;
}

/// Returns `path` absolute and normalised, without needing it to exist (for comparing names).
inline std::filesystem::path normal(const std::filesystem::path& path) {
    std::error_code ec;
    auto p = std::filesystem::weakly_canonical(path, ec);
    return ec ? std::filesystem::absolute(path, ec).lexically_normal() : p;
}

/// Returns the database whose companion `path` is (the source's, or any existing file's whose
/// name `path` extends by a companion suffix), with the suffix; empty when it is none.
inline std::pair<std::filesystem::path, std::string_view> companion_of(const std::filesystem::path& path,
                                                                       const std::filesystem::path& source) {
    const std::string name = normal(path).string();
    for (const std::string_view suffix : companion_suffixes) {
        if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        const std::filesystem::path base = name.substr(0, name.size() - suffix.size());
        std::error_code ec;
        if ((!source.empty() && normal(source) == base) || std::filesystem::is_regular_file(base, ec))
            return {base, suffix};
    }
    return {};
}

} // namespace connpool::sqlite::detail
