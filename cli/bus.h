// The verbs the supervisor's org.axolotl.Manager1 D-Bus API covers, spoken
// over that bus (`axl --bus ADDRESS|system VERB`).  Same exit statuses and
// one-line errors as the verbs in commands.h.
#pragma once
#include <string>

namespace axl::cli {

int bus_list(const std::string& bus);
int bus_create(const std::string& bus, const std::string& config_path);
int bus_destroy(const std::string& bus, const std::string& name);
int bus_drivers(const std::string& bus, bool stats);
int bus_driver_kill(const std::string& bus, const std::string& name, const std::string& signal);
int bus_driver_restart(const std::string& bus, const std::string& name);

}  // namespace axl::cli
