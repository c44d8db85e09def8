#pragma once

// SingleFlight: concurrent calls for the same key share one execution of the work.
// The first caller runs fn; callers that arrive while it runs wait and get its result.
// Thread-safe. Results are not cached after the flight lands.

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "util/status.h"

namespace imagefs {

template <typename Key, typename Value>
class SingleFlight {
 public:
  // `shared`, when not null, is set to true for callers that waited on another's flight.
  Result<Value> Do(const Key& key, const std::function<Result<Value>()>& fn, bool* shared = nullptr) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = flights_.find(key);
      if (it == flights_.end()) {
        flight = std::make_shared<Flight>();
        flights_.emplace(key, flight);
        leader = true;
      } else {
        flight = it->second;
      }
    }
    if (shared != nullptr) *shared = !leader;
    if (leader) {
      Result<Value> r = fn();
      {
        std::lock_guard<std::mutex> lock(flight->mu);
        flight->result.emplace(r);
      }
      flight->cv.notify_all();
      std::lock_guard<std::mutex> lock(mu_);
      flights_.erase(key);
      return r;
    }
    std::unique_lock<std::mutex> lock(flight->mu);
    flight->cv.wait(lock, [&] { return flight->result.has_value(); });
    return *flight->result;
  }

 private:
  struct Flight {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<Value>> result;  // guarded by mu
  };
  std::mutex mu_;  // guards flights_; taken before any Flight::mu
  std::map<Key, std::shared_ptr<Flight>> flights_;
};

}  // namespace imagefs
