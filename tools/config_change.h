#pragma once

// Shared by the commands that write a new image config (imagefs commit, imagefs import).

#include <nlohmann/json.hpp>
#include <string>

#include "util/status.h"

namespace imagefs::tools {

// Applies one Dockerfile instruction, as docker commit/import --change, to config["config"]:
// CMD ENTRYPOINT (JSON exec form or shell form), ENV LABEL (KEY=VALUE... or "KEY VALUE"),
// EXPOSE, USER, VOLUME, WORKDIR. Anything else is kInvalidArgument naming the instructions.
Status ApplyChange(nlohmann::ordered_json& config, const std::string& change);

// Now, as the RFC 3339 UTC timestamp with nanoseconds that docker writes into configs.
std::string NowRfc3339();

}  // namespace imagefs::tools
