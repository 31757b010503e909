#pragma once

// A real monitored run for the monitor tests: several pools of fake connections behind one Hub,
// many jobs (some failing, some cancelled, some with hostile names), a pool timeout and failing
// creates, so every sink sees what production would show it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <connpool/jobs.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/pool.hpp>

#include "counting_connection.hpp"

namespace connpool::testing {

using MonitorPool = Pool<FakeConnection, FakeFactory>;
using MonitorRunner = JobRunner<MonitorPool>;

/// A name with everything that breaks naive escaping: quotes, a backslash, a newline, non-ASCII,
/// and a secret that must never reach a sink.
inline const std::string hostile_name = "orders \"main\"\\db\nZ\xC3\xBCrich \xE2\x9C\x93 password=hunter2";

/// The pieces of one run: a hub with whatever sinks the test added, pools, runners, watches.
struct MonitoredRun {
    explicit MonitoredRun(monitor::HubOptions options = {}) : hub(std::move(options)) {}

    /// Builds `pools` pools named pool-0.. (pool-1 has failing creates), and runs `jobs` jobs
    /// on each: every 7th fails (its error carries a conninfo with a password), every 11th is
    /// cancelled, one per pool has the hostile name. Also provokes one acquire timeout on pool-0.
    /// `step` is slept per progress step (to leave time to scrape a run in progress).
    void run(int pools, int jobs, std::chrono::microseconds step = std::chrono::microseconds{0}) {
        start(pools, jobs, step);
        wait();
    }

    void start(int pools, int jobs, std::chrono::microseconds step = std::chrono::microseconds{0}) {
        for (int i = 0; i < pools; ++i) {
            FakeFactory factory;
            if (i == 1) *factory.fail_next = 2; // two create_failed events, then fine
            PoolOptions o;
            o.max_size = 2;
            o.acquire_timeout = std::chrono::seconds(30);
            o.create_retry_initial = std::chrono::milliseconds(1);
            o.create_retry_max = std::chrono::milliseconds(2);
            o.maintenance_interval = std::chrono::milliseconds(0);
            const std::string name = "pool-" + std::to_string(i);
            pool_list.push_back(std::make_unique<MonitorPool>(factory, hub.instrument(name, o)));
            watches.push_back(hub.watch(name, *pool_list.back()));
        }
        // A timeout with a known pool state: hold both connections, then ask for a third.
        {
            auto a = pool_list[0]->acquire();
            auto b = pool_list[0]->acquire();
            try {
                (void)pool_list[0]->acquire_for(std::chrono::milliseconds(1));
            } catch (const AcquireTimeout&) {
                ++timeouts;
            }
        }
        for (auto& pool : pool_list) {
            RunnerOptions ro;
            ro.progress_interval = std::chrono::milliseconds(0);
            runners.push_back(std::make_unique<MonitorRunner>(*pool, ro));
        }
        for (int r = 0; r < pools; ++r) {
            for (int j = 0; j < jobs; ++j) {
                const bool fail = j % 7 == 3 && j % 11 != 5;
                const bool cancel = j % 11 == 5;
                std::string name = j == 0 ? hostile_name : "db_" + std::to_string(r) + "_" + std::to_string(j) + ".sqlite";
                Job<FakeConnection> job{name, j % 5 == 4 ? JobKind::restore : JobKind::backup,
                                        [fail, step](FakeConnection&, ProgressReporter& rep) {
                                            rep.set_total(100, "pages");
                                            for (int k = 0; k < 10; ++k) {
                                                if (k == 5) rep.set_phase("copying");
                                                if (k == 6 && fail)
                                                    throw std::runtime_error(
                                                        "cannot connect to host=db1 user=app password=hunter2: refused");
                                                if (rep.stop_requested()) return; // the cancelled ones
                                                if (step.count() > 0) std::this_thread::sleep_for(step);
                                                rep.advance(10);
                                            }
                                            if (fail) throw std::logic_error("unreachable");
                                        }};
                handles.push_back(runners[static_cast<std::size_t>(r)]->submit(std::move(job), hub.track()));
                if (cancel) handles.back().cancel();
            }
        }
    }

    void wait() {
        for (auto& h : handles) h.wait();
    }

    monitor::Hub hub;
    std::vector<std::unique_ptr<MonitorPool>> pool_list;
    std::vector<monitor::Watch> watches; // after the pools: destroyed before them
    std::vector<std::unique_ptr<MonitorRunner>> runners;
    std::vector<JobHandle> handles;
    int timeouts = 0;
};

} // namespace connpool::testing
