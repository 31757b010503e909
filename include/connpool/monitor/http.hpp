#pragma once

// The HTTP endpoint (target connpool::monitor_http, which links cpp-httplib): GET /metrics is
// the Prometheus text, GET /jobs a JSON array of the jobs' latest progress, GET /sets one of the
// sets' (Hub::track_set: a whole database backup's totals); anything else is a 404. Opt-in, so users without cpp-httplib can still use the other sinks.

#include <atomic>
#include <charconv> // std::from_chars: strict port parsing
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <httplib.h>
#include <sys/socket.h> // setsockopt

#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>

namespace connpool::monitor {

/// An address to listen on.
struct HostPort {
    std::string host; ///< a name or an address; IPv6 without brackets
    int port = 0;     ///< 0 = any free port
};

/// Returns "HOST:PORT" (or "[IPv6]:PORT") parsed; throws std::invalid_argument saying what is
/// wrong. PORT is 0-65535.
inline HostPort parse_host_port(std::string_view text) {
    const auto bad = [&](const char* why) {
        return std::invalid_argument("invalid address '" + std::string(text) + "': " + why + " (expected HOST:PORT)");
    };
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') throw bad("no ']:' after an IPv6 address");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) throw bad("no port");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) throw bad("an IPv6 address needs brackets");
    }
    if (host.empty()) throw bad("no host");
    int value = -1;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value < 0 || value > 65535)
        throw bad("the port must be a number from 0 to 65535");
    return HostPort{std::string(host), value};
}

/// Serves GET /metrics, GET /jobs and GET /sets from a thread of its own, bound to the address it is given,
/// until stop() or destruction. The sources are called on the server's threads, so they must
/// be thread-safe (a Hub's are).
class HttpEndpoint {
public:
    /// Produces a response body.
    using Source = std::function<std::string()>;

    /// Binds `address` (throws std::runtime_error naming it when it cannot) and starts serving
    /// `metrics()` at /metrics and `jobs()` at /jobs.
    HttpEndpoint(const HostPort& address, Source metrics, Source jobs)
        : HttpEndpoint(address, std::move(metrics), std::move(jobs), [] { return std::string("[]"); }) {}

    /// As above, and `sets()` at /sets.
    HttpEndpoint(const HostPort& address, Source metrics, Source jobs, Source sets)
        : metrics_(std::move(metrics)), jobs_(std::move(jobs)), sets_(std::move(sets)),
          server_(std::make_unique<httplib::Server>()) {
        server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            respond(res, metrics_, std::string(prometheus_content_type));
        });
        server_->Get("/jobs", [this](const httplib::Request&, httplib::Response& res) {
            respond(res, jobs_, "application/json");
        });
        server_->Get("/sets", [this](const httplib::Request&, httplib::Response& res) {
            respond(res, sets_, "application/json");
        });
        server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
            if (res.status == 404) res.set_content("not found: try /metrics, /jobs or /sets\n", "text/plain");
        });
        // httplib's default adds SO_REUSEPORT, which lets a second server share a port in use
        // and silently split the scrapes; keep only SO_REUSEADDR (restarts past TIME_WAIT).
        server_->set_socket_options([](socket_t sock) {
            int yes = 1;
            ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        });
        if (address.port == 0) {
            port_ = server_->bind_to_any_port(address.host);
        } else if (server_->bind_to_port(address.host, address.port)) {
            port_ = address.port;
        }
        if (port_ <= 0)
            throw std::runtime_error("cannot listen on " + address.host + ":" + std::to_string(address.port) +
                                     " (address in use, or not an address of this machine?)");
        thread_ = std::thread([this] {
            server_->listen_after_bind();
            finished_.store(true);
        });
    }

    /// Serves the Prometheus text, the jobs and the sets of `hub`.
    HttpEndpoint(const HostPort& address, const Hub& hub)
        : HttpEndpoint(address, [hub] { return render_prometheus(hub.metrics()); }, [hub] { return jobs_json(hub.jobs()); },
                       [hub] { return sets_json(hub.sets()); }) {}

    HttpEndpoint(const HttpEndpoint&) = delete;
    HttpEndpoint& operator=(const HttpEndpoint&) = delete;

    /// Stops, as stop() does.
    ~HttpEndpoint() { stop(); }

    /// Returns the port it listens on (the chosen one when asked for port 0).
    [[nodiscard]] int port() const noexcept { return port_; }

    /// Stops listening, finishes the requests in progress and joins the thread. Idempotent.
    void stop() {
        if (!thread_.joinable()) return;
        // The thread may not have entered its accept loop yet, and a stop() before it does is
        // lost (httplib checks is_running()): repeat until the thread has left the loop.
        while (!finished_.load()) {
            server_->stop();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        thread_.join();
    }

private:
    static void respond(httplib::Response& res, const Source& source, const std::string& type) {
        try {
            res.set_content(source(), type);
        } catch (const std::exception& e) {
            res.status = 500;
            res.set_content(std::string("error: ") + clean(e.what()) + "\n", "text/plain");
        }
    }

    Source metrics_;
    Source jobs_;
    Source sets_;
    std::unique_ptr<httplib::Server> server_;
    int port_ = -1;
    std::atomic<bool> finished_{false};
    std::thread thread_;
};

} // namespace connpool::monitor
