// Co-simulation harness for a Verilated Tensil TCU (`top_<arch>`, built with --prefix Vtop).
//
// It plays the parts of the PYNQ board around the accelerator: the AXI DMA that streams the
// program into the 64-bit AXI-Stream `instruction` port, and two AXI4 slave memories on the
// `m_axi_dram0` / `m_axi_dram1` masters with a configurable latency and beat rate. It counts
// cycles until the program is complete (the PYNQ driver's flush probe, or draining) and dumps
// the final local memory and accumulators, read straight from the BRAM arrays that the
// Verilator configuration file makes public (the RTL itself is never edited).
//
// Invocation: cosim key=value ... (see Options below; tensil_tools/cosim/runner.py writes them).
// Output: one JSON object on stdout; exit status 0 on success, 3 on a simulation error
// (hang, timeout, AXI protocol violation), 2 on a setup error.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_syms.h"

namespace {

// A simulation error: the RTL hung, ran out of cycles or broke the AXI protocol.
struct SimError : std::runtime_error {
    std::string kind;
    SimError(const std::string& kind_, const std::string& message)
        : std::runtime_error(message), kind(kind_) {}
};

struct SetupError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string hex(uint64_t value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(value));
    return buffer;
}

std::string json_escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return out;
}

class Options {
   public:
    Options(int argc, char** argv) {
        for (int i = 1; i < argc; ++i) {
            std::string arg = argv[i];
            size_t eq = arg.find('=');
            if (eq == std::string::npos) throw SetupError("argument without '=': " + arg);
            values_[arg.substr(0, eq)] = arg.substr(eq + 1);
        }
    }
    std::string text(const std::string& key, const std::string& fallback = "") const {
        auto it = values_.find(key);
        return it == values_.end() ? fallback : it->second;
    }
    uint64_t number(const std::string& key, uint64_t fallback) const {
        auto it = values_.find(key);
        if (it == values_.end()) return fallback;
        char* end = nullptr;
        unsigned long long value = std::strtoull(it->second.c_str(), &end, 0);
        if (end == it->second.c_str() || *end != '\0')
            throw SetupError("option " + key + " is not a number: " + it->second);
        return value;
    }
    uint64_t required(const std::string& key) const {
        if (values_.find(key) == values_.end()) throw SetupError("missing option " + key);
        return number(key, 0);
    }

   private:
    std::map<std::string, std::string> values_;
};

// One AXI master's view of memory: [0, image size) is the caller's image file, mapped shared so
// that writes land in it directly; the rest of the 32-bit space is zero-filled 64 KiB pages made
// on first touch (e.g. the driver's flush probe at the top of DRAM0, or data after a Configure
// moved the region's offset).
class Memory {
   public:
    static constexpr uint64_t kPage = 1u << 16;

    void map_image(const std::string& path) {
        if (path.empty()) return;
        int fd = ::open(path.c_str(), O_RDWR);
        if (fd < 0) throw SetupError("cannot open memory image " + path);
        struct stat info;
        if (::fstat(fd, &info) != 0) throw SetupError("cannot stat memory image " + path);
        size_ = static_cast<uint64_t>(info.st_size);
        if (size_ % 8 != 0) throw SetupError("memory image size is not a multiple of 8: " + path);
        if (size_ > (1ull << 32)) throw SetupError("memory image larger than 4 GiB: " + path);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) throw SetupError("cannot map memory image " + path);
            image_ = static_cast<uint8_t*>(p);
        }
        ::close(fd);
    }
    ~Memory() {
        if (image_) ::munmap(image_, size_);
    }
    // The 8 bytes of the beat at `address` (8-byte aligned, below 2^32).
    uint8_t* beat(uint64_t address) {
        if (address < size_) return image_ + address;
        uint64_t page = address / kPage;
        auto it = pages_.find(page);
        if (it == pages_.end()) it = pages_.emplace(page, std::vector<uint8_t>(kPage, 0)).first;
        return it->second.data() + (address % kPage);
    }
    void fill(uint64_t address, uint64_t length, uint8_t value) {
        for (uint64_t a = address; a < address + length; a += 8) std::memset(beat(a), value, 8);
    }
    bool all_equal(uint64_t address, uint64_t length, uint8_t value) {
        for (uint64_t a = address; a < address + length; a += 8) {
            const uint8_t* b = beat(a);
            for (int i = 0; i < 8; ++i)
                if (b[i] != value) return false;
        }
        return true;
    }

   private:
    uint8_t* image_ = nullptr;
    uint64_t size_ = 0;
    std::unordered_map<uint64_t, std::vector<uint8_t>> pages_;
};

struct DramModel {
    uint64_t read_latency;   // cycles from the AR handshake to the first R beat
    uint64_t write_latency;  // cycles from the last W beat to the B response
    uint64_t beat_interval;  // cycles between data beats (1 = a beat every cycle)
    uint64_t max_reads;      // read bursts accepted and not yet fully returned
    uint64_t max_writes;     // write bursts accepted and not yet answered on B
};

// The signals of one AXI4 master port of the Verilated top.
struct AxiPort {
    CData *awready, *awvalid, *awid, *awlen, *awsize, *awburst;
    IData* awaddr;
    CData *wready, *wvalid, *wstrb, *wlast;
    QData* wdata;
    CData *bready, *bvalid, *bid, *bresp;
    CData *arready, *arvalid, *arid, *arlen, *arsize, *arburst;
    IData* araddr;
    CData *rready, *rvalid, *rid, *rresp, *rlast;
    QData* rdata;
};

#define BIND_PORT(top, n)                                                                       \
    AxiPort {                                                                                   \
        &top.m_axi_##n##_awready, &top.m_axi_##n##_awvalid, &top.m_axi_##n##_awid,              \
            &top.m_axi_##n##_awlen, &top.m_axi_##n##_awsize, &top.m_axi_##n##_awburst,          \
            &top.m_axi_##n##_awaddr, &top.m_axi_##n##_wready, &top.m_axi_##n##_wvalid,          \
            &top.m_axi_##n##_wstrb, &top.m_axi_##n##_wlast, &top.m_axi_##n##_wdata,             \
            &top.m_axi_##n##_bready, &top.m_axi_##n##_bvalid, &top.m_axi_##n##_bid,             \
            &top.m_axi_##n##_bresp, &top.m_axi_##n##_arready, &top.m_axi_##n##_arvalid,         \
            &top.m_axi_##n##_arid, &top.m_axi_##n##_arlen, &top.m_axi_##n##_arsize,             \
            &top.m_axi_##n##_arburst, &top.m_axi_##n##_araddr, &top.m_axi_##n##_rready,         \
            &top.m_axi_##n##_rvalid, &top.m_axi_##n##_rid, &top.m_axi_##n##_rresp,              \
            &top.m_axi_##n##_rlast, &top.m_axi_##n##_rdata                                      \
    }

struct Burst {
    uint64_t address;
    uint32_t beats;
    uint32_t done;
    uint8_t id;
    uint64_t ready;  // first cycle at which the slave may move this burst's next phase
};

struct ChannelStats {
    uint64_t read_bursts = 0, read_beats = 0, write_bursts = 0, write_beats = 0;
    uint64_t read_busy_cycles = 0, write_busy_cycles = 0, max_burst_beats = 0;
    uint64_t boundary_crossings = 0;  // bursts that cross a 4 KiB boundary
    std::string first_crossing;
};

// An AXI4 slave memory: in-order INCR bursts of 8-byte beats, at most max_reads/max_writes
// outstanding, first read beat read_latency cycles after AR, one beat every beat_interval
// cycles, B write_latency cycles after the last W beat.
class AxiSlave {
   public:
    AxiSlave(std::string name, AxiPort port, Memory& memory, DramModel model)
        : name_(std::move(name)), port_(port), memory_(memory), model_(model) {}

    // Drive this cycle's slave-side signals (before the clock-low evaluation).
    void drive(uint64_t cycle) {
        *port_.arready = reads_.size() < model_.max_reads;
        if (!reads_.empty() && cycle >= reads_.front().ready) {
            const Burst& r = reads_.front();
            *port_.rvalid = 1;
            std::memcpy(port_.rdata, memory_.beat(r.address + 8ull * r.done), 8);
            *port_.rid = r.id;
            *port_.rresp = 0;
            *port_.rlast = r.done + 1 == r.beats;
        } else {
            *port_.rvalid = 0;
            *port_.rlast = 0;
        }
        *port_.awready = writes_.size() + responses_.size() < model_.max_writes;
        *port_.wready = !writes_.empty() && cycle >= writes_.front().ready;
        if (!responses_.empty() && cycle >= responses_.front().ready) {
            *port_.bvalid = 1;
            *port_.bid = responses_.front().id;
            *port_.bresp = 0;
        } else {
            *port_.bvalid = 0;
        }
    }

    // Take this cycle's handshakes (after the clock-low evaluation, before the rising edge).
    // Returns true when any handshake happened. `written` receives the address of a W beat.
    bool sample(uint64_t cycle, int64_t* written) {
        bool event = false;
        *written = -1;
        if (!reads_.empty()) ++stats.read_busy_cycles;
        if (!writes_.empty() || !responses_.empty()) ++stats.write_busy_cycles;
        if (*port_.rvalid && *port_.rready) {
            Burst& r = reads_.front();
            ++r.done;
            ++stats.read_beats;
            event = true;
            if (r.done == r.beats) {
                reads_.pop_front();
                if (!reads_.empty() && reads_.front().ready < cycle + model_.beat_interval)
                    reads_.front().ready = cycle + model_.beat_interval;
            } else {
                r.ready = cycle + model_.beat_interval;
            }
        }
        if (*port_.arvalid && *port_.arready) {
            Burst b = check_burst("read", *port_.araddr, *port_.arlen, *port_.arsize,
                                  *port_.arburst, *port_.arid);
            b.ready = cycle + model_.read_latency;
            if (!reads_.empty()) b.ready = std::max(b.ready, reads_.back().ready);
            reads_.push_back(b);
            ++stats.read_bursts;
            event = true;
        }
        if (*port_.bvalid && *port_.bready) {
            responses_.pop_front();
            event = true;
        }
        if (*port_.wvalid && *port_.wready) {
            Burst& w = writes_.front();
            uint64_t address = w.address + 8ull * w.done;
            uint8_t* target = memory_.beat(address);
            uint64_t data = *port_.wdata;
            uint8_t strobe = *port_.wstrb;
            for (int i = 0; i < 8; ++i)
                if (strobe & (1u << i)) target[i] = static_cast<uint8_t>(data >> (8 * i));
            ++w.done;
            ++stats.write_beats;
            bool last = w.done == w.beats;
            if (static_cast<bool>(*port_.wlast) != last)
                throw SimError("protocol", name_ + ": WLAST " + std::to_string(*port_.wlast) +
                                               " on beat " + std::to_string(w.done) + " of a " +
                                               std::to_string(w.beats) + "-beat burst at " +
                                               hex(w.address) + " (cycle " +
                                               std::to_string(cycle) + ")");
            if (last) {
                responses_.push_back(Burst{w.address, w.beats, w.done, w.id,
                                           cycle + model_.write_latency});
                writes_.pop_front();
                if (!writes_.empty() && writes_.front().ready < cycle + model_.beat_interval)
                    writes_.front().ready = cycle + model_.beat_interval;
            } else {
                w.ready = cycle + model_.beat_interval;
            }
            *written = static_cast<int64_t>(address);
            event = true;
        }
        if (*port_.awvalid && *port_.awready) {
            Burst b = check_burst("write", *port_.awaddr, *port_.awlen, *port_.awsize,
                                  *port_.awburst, *port_.awid);
            b.ready = cycle + 1;
            if (!writes_.empty()) b.ready = std::max(b.ready, writes_.back().ready);
            writes_.push_back(b);
            ++stats.write_bursts;
            event = true;
        }
        return event;
    }

    bool busy() const {
        return !reads_.empty() || !writes_.empty() || !responses_.empty() || *port_.arvalid ||
               *port_.awvalid || *port_.wvalid;
    }

    std::string pending() const {
        std::ostringstream out;
        if (!busy()) return name_ + " idle";
        out << name_ << ":";
        if (!reads_.empty()) {
            const Burst& r = reads_.front();
            out << " " << reads_.size() << " read burst(s) outstanding (first at " << hex(r.address)
                << ", " << r.done << "/" << r.beats << " beats returned"
                << (*port_.rvalid && !*port_.rready ? ", RREADY low" : "") << ")";
        }
        if (!writes_.empty()) {
            const Burst& w = writes_.front();
            out << " " << writes_.size() << " write burst(s) awaiting data (first at "
                << hex(w.address) << ", " << w.done << "/" << w.beats << " beats"
                << (!*port_.wvalid ? ", WVALID low" : "") << ")";
        }
        if (!responses_.empty())
            out << " " << responses_.size() << " write response(s)"
                << (*port_.bvalid && !*port_.bready ? " with BREADY low" : " pending");
        if (*port_.arvalid && !*port_.arready) out << " AR waiting (slave full)";
        if (*port_.awvalid && !*port_.awready) out << " AW waiting (slave full)";
        if (*port_.wvalid && writes_.empty()) out << " WVALID without a write address";
        return out.str();
    }

    ChannelStats stats;

   private:
    Burst check_burst(const char* what, uint64_t address, unsigned len, unsigned size,
                      unsigned burst, unsigned id) {
        std::string where = name_ + " " + what + " burst at " + hex(address);
        if (burst != 1) throw SimError("protocol", where + ": burst type " + std::to_string(burst) +
                                                       ", only INCR (1) is modelled");
        if (size != 3)
            throw SimError("protocol", where + ": beat size 2^" + std::to_string(size) +
                                           " bytes, the 64-bit bus needs 8 (AxSIZE 3)");
        if (address % 8 != 0) throw SimError("protocol", where + ": not 8-byte aligned");
        uint64_t beats = len + 1ull;
        // AXI forbids a burst across a 4 KiB boundary, but the RTL's boundary splitter lets
        // some short ones through (see the README); memory here is flat, so count and serve.
        if ((address % 4096) + 8 * beats > 4096) {
            ++stats.boundary_crossings;
            if (stats.first_crossing.empty())
                stats.first_crossing =
                    std::string(what) + " " + hex(address) + " x" + std::to_string(beats);
        }
        if (address + 8 * beats > (1ull << 32))
            throw SimError("protocol", where + ": runs past the 32-bit address space");
        stats.max_burst_beats = std::max<uint64_t>(stats.max_burst_beats, beats);
        return Burst{address, static_cast<uint32_t>(beats), 0, static_cast<uint8_t>(id), 0};
    }

    std::string name_;
    AxiPort port_;
    Memory& memory_;
    DramModel model_;
    std::deque<Burst> reads_, writes_, responses_;
};

// One of the TCU's two BRAMs (local memory or accumulators), found through the public `ram`
// array and write enables that the Verilator configuration file exposes.
struct Bram {
    std::string scope;
    uint8_t* data = nullptr;
    uint64_t depth = 0, bytes = 0;
    CData* write_enables[2] = {nullptr, nullptr};
    bool writing() const {
        return (write_enables[0] && *write_enables[0]) || (write_enables[1] && *write_enables[1]);
    }
};

std::vector<Bram> find_brams(VerilatedContext& context) {
    std::vector<Bram> found;
    const VerilatedScopeNameMap* scopes = context.scopeNameMap();
    if (!scopes) return found;
    for (const auto& entry : *scopes) {
        const VerilatedVarNameMap* vars = entry.second->varsp();
        if (!vars) continue;
        auto ram = vars->find("ram");
        if (ram == vars->end()) continue;
        Bram b;
        b.scope = entry.first;
        b.data = static_cast<uint8_t*>(ram->second.datap());
        b.depth = ram->second.unpacked().elements();
        b.bytes = ram->second.totalSize();
        const char* names[2] = {"wea", "web"};
        for (int i = 0; i < 2; ++i) {
            auto we = vars->find(names[i]);
            if (we != vars->end()) b.write_enables[i] = static_cast<CData*>(we->second.datap());
        }
        found.push_back(b);
    }
    return found;
}

std::vector<uint64_t> read_words(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw SetupError("cannot open program " + path);
    std::vector<uint8_t> bytes;
    uint8_t buffer[65536];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) bytes.insert(bytes.end(), buffer, buffer + n);
    std::fclose(f);
    if (bytes.size() % 8 != 0) throw SetupError("program length is not a multiple of 8 bytes");
    std::vector<uint64_t> words(bytes.size() / 8);
    for (size_t i = 0; i < words.size(); ++i) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; --b) w = (w << 8) | bytes[8 * i + b];
        words[i] = w;
    }
    return words;
}

void copy_file_into(const std::string& path, uint8_t* target, uint64_t bytes, const char* what) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw SetupError(std::string("cannot open initial ") + what + " " + path);
    size_t n = std::fread(target, 1, bytes, f);
    std::fclose(f);
    if (n != bytes)
        throw SetupError(std::string("initial ") + what + " " + path + " holds " +
                         std::to_string(n) + " bytes, expected " + std::to_string(bytes));
}

void write_file(const std::string& path, const uint8_t* data, uint64_t bytes) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(data, 1, bytes, f) != bytes)
        throw SetupError("cannot write " + path);
    std::fclose(f);
}

std::string stats_json(const ChannelStats& s) {
    std::ostringstream out;
    out << "{\"read_bursts\": " << s.read_bursts << ", \"read_beats\": " << s.read_beats
        << ", \"write_bursts\": " << s.write_bursts << ", \"write_beats\": " << s.write_beats
        << ", \"read_busy_cycles\": " << s.read_busy_cycles
        << ", \"write_busy_cycles\": " << s.write_busy_cycles
        << ", \"max_burst_beats\": " << s.max_burst_beats
        << ", \"boundary_crossings\": " << s.boundary_crossings << ", \"first_crossing\": \""
        << s.first_crossing << "\"}";
    return out.str();
}

int simulate(const Options& options) {
    const uint64_t vector_bytes = options.required("vector_bytes");
    const uint64_t local_depth = options.required("local_depth");
    const uint64_t acc_depth = options.required("accumulator_depth");
    const std::string completion = options.text("completion", "probe");
    if (completion != "probe" && completion != "drain")
        throw SetupError("completion must be probe or drain, not " + completion);
    const bool probe = completion == "probe";
    const uint64_t probe_src = options.number("probe_src", 0);
    const uint64_t probe_dst = options.number("probe_dst", 0);
    const uint64_t timeout = options.number("timeout_cycles", 100000000);
    const uint64_t drain_idle = options.number("drain_idle_cycles", 2000);
    const uint64_t hang_cycles = options.number("hang_cycles", 100000);
    const uint64_t reset_cycles = options.number("reset_cycles", 16);
    DramModel model{options.number("read_latency", 1), options.number("write_latency", 1),
                    options.number("beat_interval", 1), options.number("max_reads", 8),
                    options.number("max_writes", 8)};
    if (model.beat_interval < 1 || model.read_latency < 1 || model.write_latency < 1 ||
        model.max_reads < 1 || model.max_writes < 1)
        throw SetupError("DRAM model values must be at least 1");

    std::vector<uint64_t> program = read_words(options.text("program"));
    Memory dram0, dram1;
    dram0.map_image(options.text("dram0"));
    dram1.map_image(options.text("dram1"));

    auto context = std::make_unique<VerilatedContext>();
    context->randReset(0);  // registers and memories start at zero, as Verilator's default
    auto top = std::make_unique<Vtop>(context.get());

    std::vector<Bram> brams = find_brams(*context);
    Bram* local = nullptr;
    Bram* acc = nullptr;
    for (Bram& b : brams) {
        bool in_acc = b.scope.find(".acc.") != std::string::npos;
        if (in_acc && b.depth == acc_depth) acc = &b;
        if (!in_acc && b.depth == local_depth) local = &b;
    }
    if (!local || !acc) {
        std::string seen;
        for (const Bram& b : brams) seen += " " + b.scope + "[" + std::to_string(b.depth) + "]";
        throw SetupError("cannot find the local memory (" + std::to_string(local_depth) +
                         " vectors) and accumulators (" + std::to_string(acc_depth) +
                         " vectors) among the public BRAMs:" + (seen.empty() ? " none" : seen));
    }
    for (Bram* b : {local, acc})
        if (b->bytes != b->depth * vector_bytes)
            throw SetupError("BRAM " + b->scope + " holds " + std::to_string(b->bytes) +
                             " bytes, expected " + std::to_string(b->depth * vector_bytes));

    AxiSlave slave0("DRAM0", BIND_PORT((*top), dram0), dram0, model);
    AxiSlave slave1("DRAM1", BIND_PORT((*top), dram1), dram1, model);

    // Reset (active low) with the clock running.
    top->reset = 0;
    top->instruction_tvalid = 0;
    for (uint64_t i = 0; i < reset_cycles; ++i) {
        top->clock = 0;
        top->eval();
        top->clock = 1;
        top->eval();
    }
    top->reset = 1;
    if (!options.text("local_in").empty())
        copy_file_into(options.text("local_in"), local->data, local->bytes, "local memory");
    if (!options.text("accumulators_in").empty())
        copy_file_into(options.text("accumulators_in"), acc->data, acc->bytes, "accumulators");
    if (probe) {
        dram0.fill(probe_src, vector_bytes, 0xff);
        dram0.fill(probe_dst, vector_bytes, 0x00);
    }

    uint64_t cycle = 0, next_word = 0, stream_stalls = 0, last_event = 0, idle_run = 0;
    uint64_t last_word_cycle = 0, probe_cycle = 0, local_writes = 0, acc_writes = 0;
    uint64_t last_local_write = 0, last_acc_write = 0, drain_cycle = 0;
    bool probe_seen = false;
    auto started = std::chrono::steady_clock::now();
    std::clock_t cpu_started = std::clock();
    for (;; ++cycle) {
        bool streaming = next_word < program.size();
        top->instruction_tvalid = streaming;
        top->instruction_tdata = streaming ? program[next_word] : 0;
        top->instruction_tlast = next_word + 1 == program.size();
        slave0.drive(cycle);
        slave1.drive(cycle);
        top->clock = 0;
        top->eval();

        bool event = false;
        if (streaming && top->instruction_tready) {
            ++next_word;
            last_word_cycle = cycle;
            event = true;
        } else if (streaming) {
            ++stream_stalls;
        }
        int64_t written0, written1;
        event |= slave0.sample(cycle, &written0);
        event |= slave1.sample(cycle, &written1);
        if (local->writing()) {
            ++local_writes;
            last_local_write = cycle;
            event = true;
        }
        if (acc->writing()) {
            ++acc_writes;
            last_acc_write = cycle;
            event = true;
        }
        if (probe && !probe_seen && written0 >= 0 &&
            static_cast<uint64_t>(written0) + 8 > probe_dst &&
            static_cast<uint64_t>(written0) < probe_dst + vector_bytes &&
            dram0.all_equal(probe_dst, vector_bytes, 0xff)) {
            probe_seen = true;
            probe_cycle = cycle + 1;
        }
        top->clock = 1;
        top->eval();

        if (event) {
            last_event = cycle;
            idle_run = 0;
        } else {
            ++idle_run;
        }
        bool consumed = next_word == program.size();
        bool quiet = !slave0.busy() && !slave1.busy();
        if (consumed && quiet && idle_run >= drain_idle) {
            drain_cycle = last_event + 1;
            break;
        }
        std::string trouble;
        if (idle_run >= hang_cycles)
            trouble = "hang";
        else if (cycle + 1 >= timeout)
            trouble = "timeout";
        if (!trouble.empty()) {
            std::ostringstream why;
            why << (trouble == "hang" ? "the RTL made no progress for " + std::to_string(idle_run) +
                                            " cycles (hang_cycles)"
                                      : "the program did not finish within " +
                                            std::to_string(timeout) + " cycles (timeout_cycles)")
                << " at cycle " << cycle << "; pending: instruction stream at word " << next_word
                << " of " << program.size();
            if (!consumed) why << (top->instruction_tready ? " (TREADY high)" : " (TREADY low)");
            why << "; " << slave0.pending() << "; " << slave1.pending()
                << "; last local-memory write at cycle " << last_local_write
                << ", last accumulator write at cycle " << last_acc_write;
            if (probe) why << "; flush probe " << (probe_seen ? "landed" : "not landed");
            throw SimError(trouble, why.str());
        }
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    double cpu_seconds = static_cast<double>(std::clock() - cpu_started) / CLOCKS_PER_SEC;
    if (probe && !probe_seen)
        throw SimError("probe", "the program drained at cycle " + std::to_string(drain_cycle) +
                                    " but the flush probe never landed at DRAM0 " +
                                    hex(probe_dst));

    if (!options.text("local_out").empty())
        write_file(options.text("local_out"), local->data, local->bytes);
    if (!options.text("accumulators_out").empty())
        write_file(options.text("accumulators_out"), acc->data, acc->bytes);
    top->final();

    std::printf(
        "{\"ok\": true, \"cycles\": %llu, \"drain_cycles\": %llu, \"simulated_cycles\": %llu, "
        "\"instruction_words\": %llu, \"last_instruction_cycle\": %llu, "
        "\"stream_stall_cycles\": %llu, \"local_write_cycles\": %llu, "
        "\"accumulator_write_cycles\": %llu, \"last_local_write_cycle\": %llu, "
        "\"last_accumulator_write_cycle\": %llu, \"sim_seconds\": %.6f, \"sim_cpu_seconds\": %.6f, "
        "\"dram0\": %s, "
        "\"dram1\": %s}\n",
        static_cast<unsigned long long>(probe ? probe_cycle : drain_cycle),
        static_cast<unsigned long long>(drain_cycle), static_cast<unsigned long long>(cycle + 1),
        static_cast<unsigned long long>(program.size()),
        static_cast<unsigned long long>(last_word_cycle),
        static_cast<unsigned long long>(stream_stalls),
        static_cast<unsigned long long>(local_writes), static_cast<unsigned long long>(acc_writes),
        static_cast<unsigned long long>(last_local_write),
        static_cast<unsigned long long>(last_acc_write), seconds, cpu_seconds, stats_json(slave0.stats).c_str(), stats_json(slave1.stats).c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options options(argc, argv);
        return simulate(options);
    } catch (const SimError& e) {
        std::printf("{\"ok\": false, \"kind\": \"%s\", \"message\": \"%s\"}\n", e.kind.c_str(),
                    json_escape(e.what()).c_str());
        return 3;
    } catch (const std::exception& e) {
        std::printf("{\"ok\": false, \"kind\": \"setup\", \"message\": \"%s\"}\n",
                    json_escape(e.what()).c_str());
        return 2;
    }
}
