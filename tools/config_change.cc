// Dockerfile instructions applied to an image config (docker commit/import --change), and
// the timestamps new configs carry.

#include "tools/config_change.h"

#include <cctype>
#include <cstdio>
#include <ctime>
#include <vector>

namespace imagefs::tools {

using OrderedJson = nlohmann::ordered_json;

std::string NowRfc3339() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  ::gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%09ldZ", ts.tv_nsec);
  return std::string(buf) + frac;
}

namespace {

std::string Trim(std::string s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

// Words split at blanks; double or single quotes group (and are removed), backslash escapes.
std::vector<std::string> Words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
      else if (c == '\\' && quote == '"' && i + 1 < s.size()) cur += s[++i];
      else cur += c;
    } else if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (in_word) out.push_back(cur);
  return out;
}

// KEY=VALUE pairs (ENV, LABEL), or the legacy "KEY VALUE..." form.
Result<std::vector<std::pair<std::string, std::string>>> Pairs(const std::string& instr,
                                                               const std::string& args) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::vector<std::string> words = Words(args);
  if (words.empty()) return Status::InvalidArgument("--change " + instr + ": needs KEY=VALUE");
  if (words[0].find('=') == std::string::npos) {
    const size_t sp = args.find_first_of(" \t");
    if (sp == std::string::npos) {
      return Status::InvalidArgument("--change " + instr + " " + args + ": needs KEY=VALUE");
    }
    out.emplace_back(words[0], Trim(args.substr(sp)));
    return out;
  }
  for (const std::string& w : words) {
    const size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Status::InvalidArgument("--change " + instr + ": \"" + w + "\" is not KEY=VALUE");
    }
    out.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  return out;
}

// A JSON array of strings (exec form), or the shell form wrapped in /bin/sh -c.
Result<OrderedJson> CommandForm(const std::string& instr, const std::string& args) {
  if (args.starts_with("[")) {
    OrderedJson j = OrderedJson::parse(args, nullptr, false);
    if (!j.is_discarded() && j.is_array()) {
      for (const auto& e : j) {
        if (!e.is_string()) {
          return Status::InvalidArgument("--change " + instr + ": the JSON array holds a non-string");
        }
      }
      return j;
    }
  }
  return OrderedJson::array({"/bin/sh", "-c", args});
}

}  // namespace

Status ApplyChange(OrderedJson& config, const std::string& change) {
  const std::string text = Trim(change);
  const size_t sp = text.find_first_of(" \t");
  std::string instr = text.substr(0, sp);
  for (char& c : instr) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string args = sp == std::string::npos ? "" : Trim(text.substr(sp));
  if (!config.contains("config") || !config["config"].is_object()) {
    config["config"] = OrderedJson::object();
  }
  OrderedJson& c = config["config"];
  if (instr == "CMD" || instr == "ENTRYPOINT") {
    ASSIGN_OR_RETURN(OrderedJson form, CommandForm(instr, args));
    c[instr == "CMD" ? "Cmd" : "Entrypoint"] = form;
  } else if (instr == "ENV") {
    ASSIGN_OR_RETURN(auto pairs, Pairs(instr, args));
    if (!c.contains("Env") || !c["Env"].is_array()) c["Env"] = OrderedJson::array();
    for (const auto& [k, v] : pairs) {
      bool replaced = false;
      for (auto& e : c["Env"]) {
        if (e.is_string() && e.get<std::string>().starts_with(k + "=")) {
          e = k + "=" + v;
          replaced = true;
        }
      }
      if (!replaced) c["Env"].push_back(k + "=" + v);
    }
  } else if (instr == "LABEL") {
    ASSIGN_OR_RETURN(auto pairs, Pairs(instr, args));
    if (!c.contains("Labels") || !c["Labels"].is_object()) c["Labels"] = OrderedJson::object();
    for (const auto& [k, v] : pairs) c["Labels"][k] = v;
  } else if (instr == "EXPOSE") {
    if (!c.contains("ExposedPorts") || !c["ExposedPorts"].is_object()) {
      c["ExposedPorts"] = OrderedJson::object();
    }
    for (std::string port : Words(args)) {
      if (port.find('/') == std::string::npos) port += "/tcp";
      c["ExposedPorts"][port] = OrderedJson::object();
    }
  } else if (instr == "VOLUME") {
    if (!c.contains("Volumes") || !c["Volumes"].is_object()) c["Volumes"] = OrderedJson::object();
    OrderedJson list = OrderedJson::parse(args, nullptr, false);
    std::vector<std::string> paths;
    if (!list.is_discarded() && list.is_array()) {
      for (const auto& e : list) {
        if (e.is_string()) paths.push_back(e.get<std::string>());
      }
    } else {
      paths = Words(args);
    }
    for (const auto& p : paths) c["Volumes"][p] = OrderedJson::object();
  } else if (instr == "USER" || instr == "WORKDIR") {
    if (args.empty()) return Status::InvalidArgument("--change " + instr + ": needs a value");
    c[instr == "USER" ? "User" : "WorkingDir"] = args;
  } else {
    return Status::InvalidArgument("--change \"" + change +
                                   "\": use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME or "
                                   "WORKDIR");
  }
  return Status::Ok();
}

}  // namespace imagefs::tools
