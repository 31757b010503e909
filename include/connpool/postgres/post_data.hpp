#pragma once

// A restore's post-data schema (pg_dump --section=post-data, plain SQL) run as pg_restore -j runs
// it: the indexes and the primary-key/unique constraints, which take most of the time (each
// reads a whole table and sorts it), on several connections at once, each table's as soon as its
// data is in (split_by_table); everything else (foreign keys, triggers, rules, ...) after all of
// them, in pg_dump's order, on one connection.
//
// pg_dump starts every object's SQL with a comment header ("--\n-- Name: ...; Type: INDEX; ...").
// The text is cut at those headers; the SET lines pg_dump puts between objects (the default
// tablespace and table access method) are state, so each piece is run after the SET lines of all
// the pieces before it. A piece cut wrongly could only fail (as SQL that does not parse), never
// do something else.

#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "connection.hpp"

namespace connpool::postgres::detail {

/// One object of a post-data script: its SQL, prefixed by the SET state before it.
struct PostDataPiece {
    std::string type; ///< pg_dump's "Type:" (INDEX, CONSTRAINT, FK CONSTRAINT, TRIGGER, ...)
    std::string sql;
};

/// A post-data script cut into the preamble (session SETs) and one piece per object.
struct PostData {
    std::string preamble;
    std::vector<PostDataPiece> pieces;
};

/// Cuts pg_dump's plain post-data SQL at its object headers; see the file comment.
inline PostData split_post_data(std::string_view sql) {
    static constexpr std::string_view header = "\n--\n-- Name: ";
    PostData out;
    std::size_t at = sql.find(header);
    out.preamble = std::string(sql.substr(0, at == std::string_view::npos ? sql.size() : at + 1));
    std::string state; // SET default_tablespace / default_table_access_method lines so far
    const auto take_state = [&state](std::string_view text) {
        for (std::size_t line = 0; line < text.size();) {
            std::size_t end = text.find('\n', line);
            if (end == std::string_view::npos) end = text.size();
            const std::string_view l = text.substr(line, end - line);
            if (l.rfind("SET default_tablespace = ", 0) == 0 || l.rfind("SET default_table_access_method = ", 0) == 0)
                state.append(l).append("\n");
            line = end + 1;
        }
    };
    take_state(out.preamble);
    while (at != std::string_view::npos) {
        const std::size_t next = sql.find(header, at + header.size());
        const std::string_view piece = sql.substr(at + 1, (next == std::string_view::npos ? sql.size() : next + 1) - (at + 1));
        const std::string_view first_line = piece.substr(3, piece.find('\n', 3) - 3); // "-- Name: ...; Type: X; Schema: ..."
        std::string type;
        const std::size_t schema = first_line.rfind("; Schema: ");
        const std::size_t t = schema == std::string_view::npos ? std::string_view::npos : first_line.rfind("; Type: ", schema);
        if (t != std::string_view::npos) type = std::string(first_line.substr(t + 8, schema - t - 8));
        out.pieces.push_back({std::move(type), state + std::string(piece)});
        take_state(piece);
        at = next;
    }
    return out;
}

/// Whether a piece may run beside others: an index or a primary-key/unique/exclusion constraint
/// needs only its own table (and functions from pre-data), never another post-data object.
inline bool runs_in_parallel(const PostDataPiece& p) { return p.type == "INDEX" || p.type == "CONSTRAINT"; }

/// The parallel pieces of a post-data script sorted by the one table each needs.
struct TablePostData {
    std::vector<std::vector<const PostDataPiece*>> per_table; ///< per_table[i]: pieces on table i only
    std::vector<const PostDataPiece*> unassigned;             ///< parallel pieces no single table claimed
};

/// Sorts the parallel pieces of `post` by table: `tables[i]` is table i's name as pg_dump writes
/// it (quote_ident(schema) || '.' || quote_ident(name)). A piece belongs to a table when its
/// statement names exactly that one table where pg_dump puts it ("ALTER TABLE [ONLY] t" at the
/// start of a line, "... ON [ONLY] t USING "); anything else (no table, or text that could name
/// two) stays unassigned and runs after all the data, so a misread can only delay a piece.
inline TablePostData split_by_table(const PostData& post, const std::vector<std::string>& tables) {
    TablePostData out;
    out.per_table.resize(tables.size());
    for (const auto& p : post.pieces) {
        if (!runs_in_parallel(p)) continue;
        std::size_t owner = tables.size(), matches = 0;
        for (std::size_t i = 0; i < tables.size(); ++i) {
            const std::string& t = tables[i];
            const bool named = p.type == "INDEX"
                                   ? p.sql.find(" ON " + t + " USING ") != std::string::npos ||
                                         p.sql.find(" ON ONLY " + t + " USING ") != std::string::npos
                                   : p.sql.find("\nALTER TABLE ONLY " + t + "\n") != std::string::npos ||
                                         p.sql.find("\nALTER TABLE " + t + "\n") != std::string::npos;
            if (named) {
                owner = i;
                ++matches;
            }
        }
        if (matches == 1) {
            out.per_table[owner].push_back(&p);
        } else {
            out.unassigned.push_back(&p);
        }
    }
    return out;
}

/// Runs `work` (parallel pieces of `post`) on `connections` at once (each piece in its own
/// transaction, so no two hold locks on each other's tables); rethrows the first failure after
/// all stopped. Every connection's session gets pg_dump's SETs (the first one's even when `work`
/// is empty, so the caller can go on with the rest of the script there): the caller must not
/// pool them again.
inline void run_parallel_post_data(const PostData& post, const std::vector<const PostDataPiece*>& work,
                                   const std::vector<Connection*>& connections) {
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr first;
    std::mutex mu;
    const auto worker = [&](Connection* c) {
        try {
            c->exec(post.preamble);
            for (std::size_t i; !failed.load() && (i = next.fetch_add(1)) < work.size();) c->exec(work[i]->sql);
        } catch (...) {
            failed.store(true);
            std::lock_guard lock(mu);
            if (!first) first = std::current_exception();
        }
    };
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < connections.size() && i < work.size(); ++i) {
        try {
            threads.emplace_back(worker, connections[i]);
        } catch (const std::system_error&) { // no more threads to be had: fewer connections work
            break;
        }
    }
    worker(connections.front());
    for (auto& t : threads) t.join();
    if (first) std::rethrow_exception(first);
}

} // namespace connpool::postgres::detail
