// axl: the Axolotl toolstack CLI (after Xen's xl).
#include <signal.h>
#include <CLI/CLI.hpp>

#include "cli/bus.h"
#include "cli/commands.h"
#include "cli/demo.h"

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"axl: the Axolotl toolstack"};
  app.require_subcommand(1);
  axl::cli::HostPaths paths{"/run/axolotl"};
  app.add_option("--state-dir", paths.state_dir, "where the host stack keeps its sockets and state")
      ->capture_default_str();
  std::string client_bus;
  app.add_option("--bus", client_bus,
                 "talk to the supervisor's org.axolotl.Manager1 D-Bus API on this bus ('system' "
                 "or an address) for list, create, destroy, drivers, driver-kill, driver-restart");
  auto state_opt = [&](CLI::App* c) {
    c->add_option("--state-dir", paths.state_dir, "host state dir (default /run/axolotl)");
  };

  auto* host = app.add_subcommand("host", "start or stop the host stack");
  host->require_subcommand(1);
  std::string host_cfg;
  auto* up = host->add_subcommand("up", "start hypervisor, supervisor and driver domains");
  up->add_option("--config", host_cfg, "host config (TOML)")->required();
  std::string bus;
  up->add_option("--bus", bus,
                 "where to serve the org.axolotl.Manager1 D-Bus API: 'system', 'none', or a bus "
                 "address such as unix:path=/run/my-bus (default: the system bus if the host "
                 "has one)");
  state_opt(up);
  auto* down = host->add_subcommand("down", "stop everything `host up` started");
  state_opt(down);

  std::string file, name;
  bool log_only = false;
  double timeout_s = 600;
  auto* create = app.add_subcommand("create", "create and start a domain from a guest config");
  create->add_option("config", file, "guest config (TOML)")->required();
  std::string vtpm_state;
  create
      ->add_option(
          "--vtpm-state", vtpm_state,
          "a name that had a vTPM before: keep its vTPM (EK, sealed state) or make a new one")
      ->check(CLI::IsMember({"keep", "new"}));
  state_opt(create);
  auto* list = app.add_subcommand("list", "list domains");
  state_opt(list);
  auto* destroy = app.add_subcommand("destroy", "stop a domain and release its devices");
  destroy->add_option("name", name)->required();
  state_opt(destroy);
  auto* console = app.add_subcommand("console", "attach to a domain's serial console");
  console->add_option("name", name)->required();
  console->add_flag("--log", log_only, "print what the console has shown so far and exit");
  state_opt(console);
  bool stats = false;
  auto* drivers = app.add_subcommand("drivers", "list driver domains");
  drivers->add_flag("--stats", stats, "also list every outage: cause, detection and outage time");
  state_opt(drivers);
  auto* vtpms =
      app.add_subcommand("vtpms", "list vTPM domains (one per guest with [vtpm] enabled)");
  state_opt(vtpms);
  auto* vpipe =
      app.add_subcommand("vtpm-pipe",
                         "pipe TPM commands from stdin to a domain's vTPM, answers to stdout "
                         "(TPM2TOOLS_TCTI=\"cmd:axl vtpm-pipe NAME\")");
  vpipe->add_option("name", name, "domain")->required();
  state_opt(vpipe);
  auto* vdel = app.add_subcommand(
      "vtpm-delete", "retire a domain's vTPM state for good (EK, seeds); not while it runs");
  vdel->add_option("name", name, "domain")->required();
  state_opt(vdel);
  std::string signal = "KILL";
  auto* dkill =
      app.add_subcommand("driver-kill", "send a signal to a driver domain (fault injection)");
  dkill->add_option("name", name)->required();
  dkill->add_option("--signal", signal, "KILL, STOP, SEGV or ABRT")
      ->check(CLI::IsMember({"KILL", "STOP", "SEGV", "ABRT"}))
      ->capture_default_str();
  state_opt(dkill);
  std::string fault;
  auto* inj = app.add_subcommand(
      "inject", "run a fault hook in a driver domain (needs fault_injection = true)");
  inj->add_option("name", name)->required();
  inj->add_option("fault", fault,
                  "a fault hook: crash, hang, cpu-hog, hog-memory, hog-pids, leak, slow, "
                  "drop-completion, "
                  "the data-path, attach and escape faults (docs/architecture.md)")
      ->required();
  axl::FaultTrigger trigger;
  inj->add_option("--after", trigger.after,
                  "fire at a request the driver answers, after this many (default: at once)");
  inj->add_option("--probability", trigger.probability,
                  "then each request fires it with this chance, 0 to 1 (0: the first one)")
      ->check(CLI::Range(0.0, 1.0));
  inj->add_option("--seed", trigger.seed, "seed of the draws (the same seed, the same request)");
  bool inj_vtpm = false, inj_daemon = false;
  inj->add_flag("--daemon", inj_daemon,
                "NAME is a host daemon, supervisor or hv: crash it (needs "
                "daemon_fault_injection = true; its monitor restarts it)");
  inj->add_flag("--vtpm", inj_vtpm,
                "NAME is a domain: run the fault (crash, hang or die-in-command) in its vTPM "
                "(needs vtpm_fault_injection = true)");
  state_opt(inj);
  auto* drestart = app.add_subcommand("driver-restart", "kill and restart a driver domain");
  drestart->add_option("name", name)->required();
  state_opt(drestart);
  auto* wait =
      app.add_subcommand("wait", "wait for a domain to shut off; exit with its script status");
  wait->add_option("name", name)->required();
  wait->add_option("--timeout", timeout_s, "seconds")->capture_default_str();
  state_opt(wait);
  std::vector<std::string> exec_argv;
  double exec_timeout_s = 60;
  auto* exec = app.add_subcommand(
      "exec", "run a command in a domain through its guest agent: axl exec NAME -- CMD [ARGS...]");
  exec->add_option("name", name)->required();
  exec->add_option("command", exec_argv, "the command and its arguments (after --)")->required();
  exec->add_option("--timeout", exec_timeout_s,
                   "seconds for the agent to answer and the command to exit")
      ->capture_default_str();
  state_opt(exec);
  double shutdown_timeout_s = 60;
  bool force = false;
  auto* shutdown = app.add_subcommand(
      "shutdown", "power a domain off cleanly (ACPI power button) and wait until it is off");
  shutdown->add_option("name", name)->required();
  shutdown->add_option("--timeout", shutdown_timeout_s, "seconds to wait")->capture_default_str();
  shutdown->add_flag("--force", force, "destroy the domain if it is not off by then");
  state_opt(shutdown);
  axl::cli::MeasureOptions mo;
  auto* meas = app.add_subcommand(
      "measure", "print the boot measurements (PCR 8, 9) and golden values for an image");
  meas->add_option("--kernel", mo.kernel, "kernel image")->check(CLI::ExistingFile);
  meas->add_option("--initrd", mo.initrd, "initrd")->check(CLI::ExistingFile);
  meas->add_option("--image", mo.image,
                   "instead: a UEFI disk image (GRUB on its ESP): its PCR 4, 8 and 9 events")
      ->check(CLI::ExistingFile);
  meas->add_option("--format", mo.format, "the --image's format: raw or qcow2")
      ->capture_default_str();
  meas->add_option("--write-golden", mo.write_golden,
                   "with --image: write those events as an event log for axl attest --golden");
  meas->add_option("--cmdline", mo.cmdline,
                   "the guest config's cmdline (the hypervisor prepends its console settings)");
  meas->add_option("--config", mo.config,
                   "guest config, measured into PCR 8 as the hypervisor does")
      ->check(CLI::ExistingFile);
  meas->add_flag("--iommu", mo.iommu, "the guest config has iommu = true");
  meas->add_option("--write-log", mo.write_log,
                   "also write the binary event log (eventlog.bin) to this file");
  meas->add_option("--write-record", mo.write_record,
                   "also write the host's boot record (boot-record.toml) to this file");
  meas->add_option("--name", mo.name, "image name for the policy entry")->capture_default_str();
  axl::cli::AttestOptions ao;
  auto* att = app.add_subcommand(
      "attest",
      "quote a domain's vTPM and verify it (EK, AK, signature, nonce, PCRs, golden values)");
  att->add_option("name", ao.name, "domain")->required();
  att->add_option("--policy", ao.policy,
                  "golden values (TOML); default golden.toml of the bundled guest image");
  att->add_option("--nonce", ao.nonce_hex, "nonce in hex (default: 32 random bytes)");
  att->add_flag("--json", ao.json, "print the verdict and every check as JSON");
  att->add_option("--golden", ao.golden,
                  "firmware-booted domain: PCRs 4, 8, 9 against this axl measure --image log");
  att->add_flag("--record", ao.record,
                "firmware-booted domain: record this boot as the reference later boots must match");
  att->add_option("--tpm", ao.tpm,
                  "talk to this TPM instead of the domain's vtpm.cmd: unix:PATH or tcp:IPV4:PORT");
  att->add_option("--event-log", ao.event_log, "event log instead of STATE/dom/NAME/eventlog.bin");
  att->add_option("--boot-record", ao.boot_record,
                  "boot record instead of STATE/dom/NAME/boot-record.toml");
  att->add_option("--ca", ao.ca, "vTPM CA certificate instead of STATE/vtpm-host/ca/ca.crt");
  state_opt(att);
  auto* pol = app.add_subcommand("policy", "check or reload the host's access policy");
  pol->require_subcommand(1);
  std::string policy_file;
  auto* pcheck = pol->add_subcommand("check", "parse a policy file; errors name file:line:column");
  pcheck->add_option("file", policy_file, "policy (TOML)")->required();
  auto* preload = pol->add_subcommand(
      "reload", "put a new policy in force for the running host, or change nothing if refused");
  preload->add_option("file", policy_file, "policy (TOML); default: the one the host config names");
  state_opt(preload);
  std::string campaign_file;
  bool campaign_plan = false;
  auto* camp = app.add_subcommand(
      "campaign",
      "run a fault-injection campaign against a self-checking workload (docs/campaigns.md)");
  camp->add_option("file", campaign_file, "the campaign's TOML file")->required();
  camp->add_flag("--plan", campaign_plan,
                 "print the injection sequence the seed draws, and run nothing");
  state_opt(camp);
  auto* demo =
      app.add_subcommand("demo", "boot a guest with a disk and a NIC served by driver domains");
  axl::cli::DemoOptions demo_opts;
  demo->add_option("--mib", demo_opts.stream_mib, "MiB to stream over the NIC")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    fprintf(stderr, "axl: %s\n", e.what());
    return 2;
  }
  using namespace axl::cli;
  if (*up) return host_up(paths, host_cfg, bus);
  if (*down) return host_down(paths);
  if (!client_bus.empty()) {
    if (*create) return bus_create(client_bus, file);
    if (*list) return bus_list(client_bus);
    if (*destroy) return bus_destroy(client_bus, name);
    if (*drivers) return bus_drivers(client_bus, stats);
    if (*dkill) return bus_driver_kill(client_bus, name, signal);
    if (*drestart) return bus_driver_restart(client_bus, name);
  }
  if (*create) return axl::cli::create(paths, file, vtpm_state);
  if (*list) return axl::cli::list(paths);
  if (*destroy) return axl::cli::destroy(paths, name);
  if (*console) return axl::cli::console(paths, name, log_only);
  if (*drivers) return axl::cli::drivers(paths, stats);
  if (*vtpms) return axl::cli::vtpms(paths);
  if (*vpipe) return axl::cli::vtpm_pipe(paths, name);
  if (*vdel) return axl::cli::vtpm_delete(paths, name);
  if (*dkill) return driver_kill(paths, name, signal);
  if (*inj) {
    if (!inj_vtpm && !inj_daemon) return inject(paths, name, fault, trigger);
    if (inj_vtpm && inj_daemon) return axl::cli::fail("--vtpm and --daemon exclude each other");
    if (!trigger.immediate() || trigger.seed)
      return axl::cli::fail("--after, --probability and --seed are for driver faults only");
    if (inj_daemon) return inject_daemon(paths, name, fault);
    return inject_vtpm(paths, name, fault);
  }
  if (*drestart) return driver_restart(paths, name);
  if (*wait) return axl::cli::wait(paths, name, timeout_s);
  if (*exec) return axl::cli::exec(paths, name, exec_argv, exec_timeout_s);
  if (*shutdown) return axl::cli::shutdown(paths, name, shutdown_timeout_s, force);
  if (*camp) return axl::cli::campaign(paths, campaign_file, campaign_plan);
  if (*demo) return run_demo(demo_opts);
  if (*pcheck) return policy_check(policy_file);
  if (*preload) return policy_reload(paths, policy_file);
  if (*meas) return measure(mo);
  if (*att) return axl::cli::attest(paths, ao);
  return 2;
}
