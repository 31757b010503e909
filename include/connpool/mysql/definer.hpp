#pragma once

// The DEFINER clause of a view's, trigger's, routine's or event's CREATE statement, as SHOW CREATE
// writes it (CREATE [OR REPLACE] [ALGORITHM=...] DEFINER=`user`@`host` [SQL SECURITY ...] VIEW ...):
// found, read and removed, so restore_database can tell whose rights an object runs with and,
// when asked, give it to the restoring user instead (a CREATE without DEFINER means
// DEFINER=CURRENT_USER). Only the statement's head is read: a body mentioning DEFINER is not.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "connection.hpp"
#include "error.hpp"

namespace connpool::mysql::detail {

/// Where a DEFINER clause is and the account it names.
struct DefinerClause {
    /// Offset of "DEFINER=" in the statement.
    std::size_t begin = 0;
    /// Offset just past the account (and its host).
    std::size_t end = 0;
    /// The account unquoted: "user@host", a role's name, or "CURRENT_USER".
    std::string account{};
};

/// Returns whether `text` at `pos` starts with `word`, ignoring case.
inline bool starts_with_word(std::string_view text, std::size_t pos, std::string_view word) noexcept {
    if (text.size() - pos < word.size()) return false;
    for (std::size_t i = 0; i < word.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(text[pos + i])) != word[i]) return false;
    return true;
}

/// Reads one part of an account at `pos` (a name quoted with ` ' or ", a quote inside doubled or,
/// in ' and ", after a backslash; or a bare word up to '@', a space or '('), moving `pos` past it.
/// Returns nothing when the text there is not one.
inline std::optional<std::string> read_account_part(std::string_view sql, std::size_t& pos) {
    if (pos >= sql.size()) return std::nullopt;
    std::string out;
    const char q = sql[pos];
    if (q == '`' || q == '\'' || q == '"') {
        for (std::size_t i = pos + 1; i < sql.size(); ++i) {
            if (q != '`' && sql[i] == '\\' && i + 1 < sql.size()) {
                out += sql[++i];
            } else if (sql[i] == q) {
                if (i + 1 < sql.size() && sql[i + 1] == q) {
                    out += q;
                    ++i;
                } else {
                    pos = i + 1;
                    return out;
                }
            } else {
                out += sql[i];
            }
        }
        return std::nullopt; // unterminated
    }
    std::size_t i = pos;
    while (i < sql.size() && sql[i] != '@' && sql[i] != '(' && !std::isspace(static_cast<unsigned char>(sql[i]))) out += sql[i++];
    if (out.empty()) return std::nullopt;
    pos = i;
    return out;
}

/// Returns the DEFINER clause in the head of CREATE statement `sql`, or nothing when the head has
/// none (or `sql` is not a CREATE statement).
inline std::optional<DefinerClause> find_definer(std::string_view sql) {
    std::size_t pos = 0;
    const auto skip_space = [&] {
        while (pos < sql.size() && std::isspace(static_cast<unsigned char>(sql[pos]))) ++pos;
    };
    const auto skip_word = [&] {
        while (pos < sql.size() && !std::isspace(static_cast<unsigned char>(sql[pos]))) ++pos;
    };
    skip_space();
    if (!starts_with_word(sql, pos, "CREATE")) return std::nullopt;
    pos += 6;
    for (;;) {
        skip_space();
        if (starts_with_word(sql, pos, "OR REPLACE")) {
            pos += 10;
        } else if (starts_with_word(sql, pos, "SQL SECURITY")) {
            pos += 12;
            skip_space();
            skip_word();
        } else if (starts_with_word(sql, pos, "ALGORITHM=")) {
            skip_word();
        } else if (starts_with_word(sql, pos, "DEFINER")) {
            DefinerClause clause;
            clause.begin = pos;
            pos += 7;
            skip_space();
            if (pos >= sql.size() || sql[pos] != '=') return std::nullopt;
            ++pos;
            skip_space();
            if (starts_with_word(sql, pos, "CURRENT_USER")) {
                pos += 12;
                if (sql.substr(pos, 2) == "()") pos += 2;
                clause.account = "CURRENT_USER";
            } else {
                auto user = read_account_part(sql, pos);
                if (!user) return std::nullopt;
                clause.account = *user;
                if (pos < sql.size() && sql[pos] == '@') {
                    ++pos;
                    auto host = read_account_part(sql, pos);
                    if (!host) return std::nullopt;
                    clause.account += "@" + *host;
                }
            }
            clause.end = pos;
            return clause;
        } else {
            return std::nullopt; // the object's kind (VIEW, TRIGGER, ...): the head had no DEFINER
        }
    }
}

/// Returns `sql` without its DEFINER clause (unchanged when it has none), so the object is
/// created with the restoring user as its definer.
inline std::string without_definer(const std::string& sql) {
    const auto clause = find_definer(sql);
    if (!clause) return sql;
    std::size_t end = clause->end;
    while (end < sql.size() && std::isspace(static_cast<unsigned char>(sql[end]))) ++end;
    return sql.substr(0, clause->begin) + sql.substr(end);
}

/// Refuses, before anything is restored, a set whose views, triggers, routines or events name a
/// DEFINER the connection's user may not give (another account, without SET USER or SUPER): they
/// would fail only after every table was loaded. The server decides, through a probe view named
/// `probe` created with that definer and dropped at once; a probe refused for another reason (no
/// CREATE VIEW privilege, say) decides nothing, and the objects' own creation will tell.
inline void check_definers(Connection& c, const nlohmann::json& schema, const std::string& probe, const std::string& what) {
    const std::string me = c.query_value("SELECT CURRENT_USER()").value_or("");
    std::vector<std::string> tried;
    for (const char* section : {"views", "routines", "triggers", "events"}) {
        for (const auto& o : schema.at(section)) {
            const std::string sql = o.at("sql").get<std::string>();
            const auto clause = find_definer(sql);
            if (!clause || clause->account == "CURRENT_USER" || clause->account == me) continue;
            const std::string definer = sql.substr(clause->begin, clause->end - clause->begin);
            if (std::find(tried.begin(), tried.end(), definer) != tried.end()) continue;
            tried.push_back(definer);
            try {
                c.exec("CREATE " + definer + " SQL SECURITY INVOKER VIEW " + quote_identifier(probe) + " AS SELECT 1");
                c.exec("DROP VIEW " + quote_identifier(probe));
            } catch (const Error& e) {
                if (e.code() != 1227) continue; // ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need SET USER or SUPER"
                std::string kind = section == std::string("routines") ? o.value("kind", "routine") : section;
                if (kind.back() == 's') kind.pop_back();
                for (auto& ch : kind) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                throw Error(what + ": the set's " + kind + " " + quote_identifier(o.at("name").get<std::string>()) +
                                " has " + definer + ", and " + me +
                                " may not create objects for another account (it needs SET USER or SUPER); restore "
                                "with DatabaseRestoreOptions::definers = Definers::current_user to make the restoring "
                                "user their definer, or as a user who may; nothing was changed",
                            1227, "42000");
            }
        }
    }
}

} // namespace connpool::mysql::detail
