#pragma once

// A backup set's manifest: one JSON file, written last and durably, listing each file of the
// set with its size and XXH3-64 checksum and the manifest's format version. A restore calls
// verify_manifest() before it touches anything, so a set with a missing, short, grown or changed
// file is refused as a whole.

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/stat.h> // stat
#include <unistd.h>   // write

#include <nlohmann/json.hpp>

#include "checksum.hpp"
#include "durable_file.hpp"

namespace connpool::io {

/// A file's identity: device, inode, size and modification time (ns). Equal identities before
/// and after a read mean the bytes read are the file's.
struct FileIdentity {
    std::uint64_t device = 0, inode = 0, size = 0;
    std::int64_t mtime_ns = 0;
    friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};

/// Returns `path`'s identity now, or nothing when it cannot be stat()ed.
[[nodiscard]] inline std::optional<FileIdentity> file_identity(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    return FileIdentity{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                        static_cast<std::uint64_t>(st.st_size),
                        static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

/// Runs `open` (which opens `path` and keeps it open) and returns whether the file it opened is
/// the one a caller checked: `path` had the identity `checked` both before and after the open,
/// so it was neither changed nor replaced in between (a reader keeps the inode it opened).
template <class Open>
[[nodiscard]] bool opened_as_checked(const std::filesystem::path& path, const std::optional<FileIdentity>& checked,
                                     Open&& open) {
    const bool before = checked && file_identity(path) == checked;
    open();
    return before && file_identity(path) == checked;
}

/// One file of a backup set, as the manifest records it.
struct ManifestEntry {
    /// File name inside the set's directory (no directory part).
    std::string name;
    /// Size and checksum at the time the set was written.
    FileDigest digest;
    /// Set by verify_manifest(): the file's identity, when it kept one while its checksum was
    /// read. While the file still has it, its bytes are the ones that matched, so a reader that
    /// checks the file whole again (a table restore's check pass) may skip that read.
    std::optional<FileIdentity> checked{};
};

/// What a manifest holds.
struct Manifest {
    /// The manifest format this library writes; verify_manifest() refuses any other.
    static constexpr int current_format_version = 1;
    /// The format version read (or to write).
    int format_version = current_format_version;
    /// The set's files, in the order they were added.
    std::vector<ManifestEntry> files;

    /// Returns the entry for the file `name`, or nullptr when the manifest does not list it.
    [[nodiscard]] const ManifestEntry* entry(const std::string& name) const {
        for (const auto& f : files)
            if (f.name == name) return &f;
        return nullptr;
    }
};

/// The manifest's file name inside a backup set's directory.
inline constexpr std::string_view manifest_name = "manifest.json";

namespace detail {

inline bool plain_file_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
           name.find('\0') == std::string::npos;
}

} // namespace detail

/// Returns the entry for `dir/name` as it is now (size and checksum); throws Error naming it.
[[nodiscard]] inline ManifestEntry manifest_entry(const std::filesystem::path& dir, const std::string& name) {
    return ManifestEntry{name, digest_file(dir / name)};
}

/// Writes `manifest` as `dir/manifest.json` through a temp file, fsync, rename and a directory
/// fsync, so it appears whole or not at all; call it after every file of the set is durable.
inline void write_manifest(const std::filesystem::path& dir, const Manifest& manifest) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : manifest.files) {
        if (!detail::plain_file_name(f.name))
            throw Error("cannot write the manifest of " + detail::quoted(dir) + ": '" + f.name +
                            "' is not a plain file name",
                        EINVAL);
        files.push_back({{"name", f.name}, {"size", f.digest.size}, {"xxh3", to_hex(f.digest.xxh3)}});
    }
    const nlohmann::json doc{{"format", "connpool-backup-set"},
                             {"format_version", manifest.format_version},
                             {"checksum", "xxh3-64"},
                             {"files", files}};
    const std::string text = doc.dump(2) + "\n";
    const auto path = dir / manifest_name;
    TempFile temp(path, Publish::replace);
    std::size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = ::write(temp.fd(), text.data() + written, text.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            detail::throw_errno("cannot write " + detail::quoted(temp.path()), errno);
        }
        written += static_cast<std::size_t>(n);
    }
    temp.sync();
    temp.publish();
}

/// Reads `dir/manifest.json`; throws Error naming the manifest and what is wrong with it
/// (missing, not JSON, another format version, a malformed entry).
[[nodiscard]] inline Manifest read_manifest(const std::filesystem::path& dir) {
    const auto path = dir / manifest_name;
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw Error("backup set " + detail::quoted(dir) + " has no readable " + std::string(manifest_name), ENOENT);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto doc = nlohmann::json::parse(text, nullptr, false);
    const std::string where = "manifest " + detail::quoted(path);
    if (doc.is_discarded() || !doc.is_object()) throw Error(where + " is not valid JSON", EINVAL);
    if (!doc.contains("format_version") || !doc["format_version"].is_number_integer())
        throw Error(where + " has no format_version", EINVAL);
    Manifest manifest;
    manifest.format_version = doc["format_version"].get<int>();
    if (manifest.format_version != Manifest::current_format_version)
        throw Error(where + " has format version " + std::to_string(manifest.format_version) + "; this library reads " +
                        std::to_string(Manifest::current_format_version),
                    EINVAL);
    if (!doc.contains("files") || !doc["files"].is_array()) throw Error(where + " has no file list", EINVAL);
    for (const auto& f : doc["files"]) {
        if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
            !f["size"].is_number_unsigned() || !f.contains("xxh3") || !f["xxh3"].is_string())
            throw Error(where + " has a malformed entry: " + f.dump(), EINVAL);
        ManifestEntry entry;
        entry.name = f["name"].get<std::string>();
        if (!detail::plain_file_name(entry.name))
            throw Error(where + " lists '" + entry.name + "', which is not a file of the set's directory", EINVAL);
        entry.digest.size = f["size"].get<std::uint64_t>();
        const std::string hex = f["xxh3"].get<std::string>();
        std::size_t used = 0;
        try {
            entry.digest.xxh3 = std::stoull(hex, &used, 16);
        } catch (const std::exception&) {
            used = 0;
        }
        if (hex.size() != 16 || used != 16)
            throw Error(where + " has a malformed checksum for '" + entry.name + "'", EINVAL);
        manifest.files.push_back(std::move(entry));
    }
    return manifest;
}

/// Reads the manifest of `dir` and checks that every file it lists is there with its size and
/// checksum; returns the manifest (each entry's `checked` set when the file kept its identity
/// while it was read), or throws Error naming the first file that differs and how.
inline Manifest verify_manifest(const std::filesystem::path& dir) {
    Manifest manifest = read_manifest(dir);
    for (auto& f : manifest.files) {
        const auto path = dir / f.name;
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
            throw Error("backup set " + detail::quoted(dir) + ": " + detail::quoted(path) + " is missing", ENOENT);
        const auto before = file_identity(path);
        const FileDigest now = digest_file(path);
        if (before && file_identity(path) == before) f.checked = before;
        if (now.size != f.digest.size)
            throw Error("backup set " + detail::quoted(dir) + ": " + detail::quoted(path) + " has " +
                            std::to_string(now.size) + " bytes; the manifest says " + std::to_string(f.digest.size),
                        EINVAL);
        if (now.xxh3 != f.digest.xxh3)
            throw Error("backup set " + detail::quoted(dir) + ": " + detail::quoted(path) +
                            " does not match its checksum in the manifest (xxh3 " + to_hex(now.xxh3) + ", expected " +
                            to_hex(f.digest.xxh3) + ")",
                        EINVAL);
    }
    return manifest;
}

} // namespace connpool::io
