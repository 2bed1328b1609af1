// PyTorch zip checkpoints: a restricted unpickler for data.pkl and in-place reads of the storage
// records through libzip. See torch_checkpoint.h for what is accepted.
#include "surf/storage/torch_checkpoint.h"

#include <zip.h>

#include <cstring>
#include <map>
#include <unordered_map>

namespace fs = std::filesystem;

namespace surf {

namespace {

// ---------------------------------------------------------------------------------- values

// The globals the unpickler resolves; every other name is refused.
enum class Global { ordered_dict, rebuild_tensor_v2, rebuild_parameter, storage_type };

struct StorageType {
  const char* torch_name;
  const char* dtype;  // safetensors spelling
  size_t element_size;
};

constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", "F32", 4}, {"HalfStorage", "F16", 2},  {"BFloat16Storage", "BF16", 2},
    {"LongStorage", "I64", 8},  {"BoolStorage", "BOOL", 1}, {"ByteStorage", "U8", 1},
};

struct Value;
using Ptr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor };
  Kind kind = Kind::none;
  int64_t i = 0;                              // integer, boolean
  double f = 0.0;                             // floating
  std::string s;                              // string; global: "module.name"; storage: its key
  std::vector<Ptr> items;                     // tuple, list; tensor: [storage]
  std::vector<std::pair<Ptr, Ptr>> entries;   // dict (in insertion order)
  Global global = Global::ordered_dict;       // global
  const StorageType* storage_type = nullptr;  // global storage_type, storage
  uint64_t numel = 0;                         // storage
  uint64_t offset = 0;                        // tensor: storage offset in elements
  Shape shape, stride;                        // tensor
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::none:
      return "None";
    case Value::Kind::boolean:
      return "bool";
    case Value::Kind::integer:
      return "int";
    case Value::Kind::floating:
      return "float";
    case Value::Kind::string:
      return "str";
    case Value::Kind::tuple:
      return "tuple";
    case Value::Kind::list:
      return "list";
    case Value::Kind::dict:
      return "dict";
    case Value::Kind::global:
      return "global";
    case Value::Kind::storage:
      return "storage";
    case Value::Kind::tensor:
      return "tensor";
  }
  return "?";
}

Ptr make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

// Names of the standard pickle opcodes, for refusals.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(':
      return "MARK";
    case '.':
      return "STOP";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'L':
      return "LONG";
    case 'M':
      return "BININT2";
    case 'N':
      return "NONE";
    case 'P':
      return "PERSID";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'X':
      return "BINUNICODE";
    case 'a':
      return "APPEND";
    case 'b':
      return "BUILD";
    case 'c':
      return "GLOBAL";
    case 'd':
      return "DICT";
    case '}':
      return "EMPTY_DICT";
    case 'e':
      return "APPENDS";
    case 'g':
      return "GET";
    case 'h':
      return "BINGET";
    case 'i':
      return "INST";
    case 'j':
      return "LONG_BINGET";
    case 'l':
      return "LIST";
    case ']':
      return "EMPTY_LIST";
    case 'o':
      return "OBJ";
    case 'p':
      return "PUT";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 's':
      return "SETITEM";
    case 't':
      return "TUPLE";
    case ')':
      return "EMPTY_TUPLE";
    case 'u':
      return "SETITEMS";
    case 'G':
      return "BINFLOAT";
    case 0x80:
      return "PROTO";
    case 0x81:
      return "NEWOBJ";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 0x8a:
      return "LONG1";
    case 0x8b:
      return "LONG4";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 0x8e:
      return "BINBYTES8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x93:
      return "STACK_GLOBAL";
    case 0x94:
      return "MEMOIZE";
    case 0x95:
      return "FRAME";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    default:
      return "unknown";
  }
}

std::string hex_byte(uint8_t b) {
  static const char* d = "0123456789abcdef";
  return std::string("0x") + d[b >> 4] + d[b & 15];
}

// ---------------------------------------------------------------------------------- unpickler

// Bounds that keep a hostile pickle from exhausting memory.
constexpr size_t kMaxStack = 1u << 20;
constexpr size_t kMaxMemo = 1u << 22;
constexpr uint64_t kMaxString = 1u << 24;
constexpr size_t kMaxRank = 16;

class Unpickler {
 public:
  Unpickler(std::string_view data, std::string what) : d_(data), what_(std::move(what)) {}

  Ptr run() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = byte();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = byte();
          if (proto > 5) corrupt("pickle protocol " + std::to_string(proto) + " is not supported");
          break;
        }
        case 0x95:
          take(8);
          break;     // FRAME: a length hint
        case '.': {  // STOP
          if (stack_.size() != 1 || !marks_.empty())
            corrupt("the pickle ends with " + std::to_string(stack_.size()) + " values on its stack");
          return stack_.back();
        }
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '}':
          push(make(Value::Kind::dict));
          break;
        case ']':
          push(make(Value::Kind::list));
          break;
        case ')':
          push(make(Value::Kind::tuple));
          break;
        case 't': {
          auto t = make(Value::Kind::tuple);
          t->items = pop_to_mark();
          push(t);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84u;
          auto t = make(Value::Kind::tuple);
          t->items.resize(n);
          for (size_t i = n; i-- > 0;) t->items[i] = pop();
          push(t);
          break;
        }
        case 'J':
          push(integer(static_cast<int32_t>(le(4))));
          break;
        case 'K':
          push(integer(byte()));
          break;
        case 'M':
          push(integer(static_cast<int64_t>(le(2))));
          break;
        case 0x8a: {  // LONG1: two's complement, little-endian
          const size_t n = byte();
          if (n > 8) corrupt("integer of " + std::to_string(n) + " bytes is out of range");
          uint64_t u = n ? le(n) : 0;
          if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t{0} << (8 * n);  // sign-extend
          push(integer(static_cast<int64_t>(u)));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          uint64_t u = 0;
          for (char c : take(8)) u = (u << 8) | static_cast<uint8_t>(c);
          auto v = make(Value::Kind::floating);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'N':
          push(make(Value::Kind::none));
          break;
        case 0x88:
        case 0x89: {
          auto v = make(Value::Kind::boolean);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'X':
          push(string(le(4)));
          break;  // BINUNICODE
        case 0x8c:
          push(string(byte()));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push(string(le(8)));
          break;  // BINUNICODE8
        case 'T':
          push(string(le(4)));
          break;  // BINSTRING
        case 'U':
          push(string(byte()));
          break;  // SHORT_BINSTRING
        case 'B':
          push(string(le(4)));
          break;  // BINBYTES
        case 'C':
          push(string(byte()));
          break;  // SHORT_BINBYTES
        case 'q':
          memo_put(byte());
          break;  // BINPUT
        case 'r':
          memo_put(le(4));
          break;  // LONG_BINPUT
        case 0x94:
          memo_put(memo_.size());
          break;  // MEMOIZE
        case 'h':
          push(memo_get(byte()));
          break;  // BINGET
        case 'j':
          push(memo_get(le(4)));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line(), name = line();
          push(resolve(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Ptr name = pop(), module = pop();
          if (name->kind != Value::Kind::string || module->kind != Value::Kind::string) {
            corrupt("STACK_GLOBAL needs two strings");
          }
          push(resolve(module->s, name->s));
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          Ptr args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b': {  // BUILD: only a dict's attribute state (a state dict's _metadata), dropped
          Ptr state = pop();
          if (top()->kind != Value::Kind::dict) refuse("BUILD on a " + std::string(kind_name(top()->kind)));
          (void)state;
          break;
        }
        case 's': {  // SETITEM
          Ptr value = pop(), key = pop();
          dict_below()->entries.emplace_back(key, value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Ptr> kv = pop_to_mark();
          if (kv.size() % 2 != 0) corrupt("SETITEMS with an odd number of values");
          Ptr d = dict_below();
          for (size_t i = 0; i < kv.size(); i += 2) d->entries.emplace_back(kv[i], kv[i + 1]);
          break;
        }
        case 'a': {  // APPEND
          Ptr v = pop();
          list_below()->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Ptr> vs = pop_to_mark();
          Ptr l = list_below();
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        default:
          pos_ = at;
          refuse(std::string("pickle opcode ") + opcode_name(op) + " (" + hex_byte(op) + ") at byte " +
                 std::to_string(at));
      }
    }
  }

 private:
  [[noreturn]] void corrupt(const std::string& why) const {
    fail(ErrorCode::corrupt, what_ + ": malformed pickle: " + why);
  }
  [[noreturn]] void refuse(const std::string& what) const {
    fail(ErrorCode::unsupported,
         what_ + ": refused " + what + " (a checkpoint may only hold tensors; nothing from the file was run)");
  }

  uint8_t byte() {
    if (pos_ >= d_.size()) corrupt("it ends without STOP");
    return static_cast<uint8_t>(d_[pos_++]);
  }
  std::string_view take(uint64_t n) {
    if (n > d_.size() - pos_) corrupt("a value of " + std::to_string(n) + " bytes runs past its end");
    std::string_view v = d_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  uint64_t le(size_t n) {
    uint64_t u = 0;
    std::string_view b = take(n);
    for (size_t i = n; i-- > 0;) u = (u << 8) | static_cast<uint8_t>(b[i]);
    return u;
  }
  std::string line() {
    const size_t nl = d_.find('\n', pos_);
    if (nl == std::string_view::npos || nl - pos_ > 256) corrupt("GLOBAL without a name line");
    std::string s(d_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return s;
  }
  Ptr integer(int64_t v) {
    auto p = make(Value::Kind::integer);
    p->i = v;
    return p;
  }
  Ptr string(uint64_t n) {
    if (n > kMaxString) corrupt("a string of " + std::to_string(n) + " bytes");
    auto p = make(Value::Kind::string);
    p->s = std::string(take(n));
    return p;
  }

  void push(Ptr v) {
    if (stack_.size() >= kMaxStack) corrupt("stack deeper than " + std::to_string(kMaxStack));
    stack_.push_back(std::move(v));
  }
  Ptr pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) corrupt("stack underflow");
    Ptr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const Ptr& top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) corrupt("stack underflow");
    return stack_.back();
  }
  std::vector<Ptr> pop_to_mark() {
    if (marks_.empty()) corrupt("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ptr> out(std::make_move_iterator(stack_.begin() + static_cast<ptrdiff_t>(m)),
                         std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }
  Ptr dict_below() {
    const Ptr& d = top();
    if (d->kind != Value::Kind::dict) refuse("setting items of a " + std::string(kind_name(d->kind)));
    return d;
  }
  Ptr list_below() {
    const Ptr& l = top();
    if (l->kind != Value::Kind::list) refuse("appending to a " + std::string(kind_name(l->kind)));
    return l;
  }
  void memo_put(uint64_t index) {
    if (index >= kMaxMemo) corrupt("memo index " + std::to_string(index) + " is out of range");
    memo_[index] = top();
  }
  Ptr memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) corrupt("memo index " + std::to_string(index) + " was never set");
    return it->second;
  }

  Ptr resolve(const std::string& module, const std::string& name) {
    auto g = make(Value::Kind::global);
    g->s = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      g->global = Global::ordered_dict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g->global = Global::rebuild_tensor_v2;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      g->global = Global::rebuild_parameter;
    } else {
      const StorageType* st = nullptr;
      if (module == "torch") {
        for (const auto& t : kStorageTypes) {
          if (name == t.torch_name) st = &t;
        }
      }
      if (st == nullptr) refuse("global '" + g->s + "'");
      g->global = Global::storage_type;
      g->storage_type = st;
    }
    return g;
  }

  // ('storage', storage type, key, location, numel)
  Ptr persistent_load(const Ptr& pid) {
    const auto& t = pid->items;
    if (pid->kind != Value::Kind::tuple || t.size() != 5 || t[0]->kind != Value::Kind::string || t[0]->s != "storage") {
      refuse("persistent id other than a tensor storage");
    }
    if (t[1]->kind != Value::Kind::global || t[1]->global != Global::storage_type ||
        t[2]->kind != Value::Kind::string || t[4]->kind != Value::Kind::integer || t[4]->i < 0) {
      corrupt("storage reference is not (storage, type, key, location, size)");
    }
    if (t[2]->s.empty() || t[2]->s.find('/') != std::string::npos || t[2]->s.find("..") != std::string::npos) {
      corrupt("storage key '" + t[2]->s + "' is not a record name");
    }
    auto s = make(Value::Kind::storage);
    s->s = t[2]->s;
    s->storage_type = t[1]->storage_type;
    s->numel = static_cast<uint64_t>(t[4]->i);
    return s;
  }

  Shape int_tuple(const Ptr& v, const char* what) {
    if (v->kind != Value::Kind::tuple || v->items.size() > kMaxRank)
      corrupt(std::string(what) + " is not a tuple of ints");
    Shape out;
    for (const auto& x : v->items) {
      if (x->kind != Value::Kind::integer || x->i < 0)
        corrupt(std::string(what) + " holds a non-integer or negative value");
      out.push_back(x->i);
    }
    return out;
  }

  Ptr reduce(const Ptr& callable, const Ptr& args) {
    if (callable->kind != Value::Kind::global) refuse("calling a " + std::string(kind_name(callable->kind)));
    if (args->kind != Value::Kind::tuple) corrupt("REDUCE arguments are not a tuple");
    const auto& a = args->items;
    switch (callable->global) {
      case Global::ordered_dict:
        if (!a.empty()) refuse("collections.OrderedDict with arguments");
        return make(Value::Kind::dict);
      case Global::rebuild_tensor_v2: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.size() < 4 || a[0]->kind != Value::Kind::storage || a[1]->kind != Value::Kind::integer || a[1]->i < 0) {
          corrupt("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
        }
        auto t = make(Value::Kind::tensor);
        t->items = {a[0]};
        t->offset = static_cast<uint64_t>(a[1]->i);
        t->shape = int_tuple(a[2], "tensor size");
        t->stride = int_tuple(a[3], "tensor stride");
        if (t->shape.size() != t->stride.size()) corrupt("tensor size and stride differ in rank");
        return t;
      }
      case Global::rebuild_parameter:  // (tensor, requires_grad, backward_hooks)
        if (a.empty() || a[0]->kind != Value::Kind::tensor) corrupt("_rebuild_parameter without a tensor");
        return a[0];
      case Global::storage_type:
        break;
    }
    refuse("calling '" + callable->s + "'");
  }

  std::string_view d_;
  std::string what_;
  size_t pos_ = 0;
  std::vector<Ptr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Ptr> memo_;
};

}  // namespace

std::vector<TorchTensorRecord> parse_torch_state_dict(std::string_view pickle, const std::string& what) {
  const Ptr root = Unpickler(pickle, what).run();
  if (root->kind != Value::Kind::dict) {
    fail(ErrorCode::unsupported, what + ": holds a " + std::string(kind_name(root->kind)) + ", not a state dict");
  }
  std::vector<TorchTensorRecord> out;
  for (const auto& [key, value] : root->entries) {
    if (key->kind != Value::Kind::string) fail(ErrorCode::unsupported, what + ": a state dict key is not a string");
    if (value->kind != Value::Kind::tensor) {
      fail(ErrorCode::unsupported, what + ": entry '" + key->s + "' is a " + kind_name(value->kind) +
                                       ", not a tensor (only flat state dicts of tensors are read)");
    }
    const Value& storage = *value->items[0];
    TorchTensorRecord r;
    r.name = key->s;
    r.dtype = storage.storage_type->dtype;
    r.shape = value->shape;
    r.storage_key = storage.s;
    r.storage_offset = value->offset;
    r.storage_numel = storage.numel;
    if (r.storage_numel > (uint64_t{1} << 56)) {
      fail(ErrorCode::corrupt,
           what + ": storage '" + r.storage_key + "' of " + std::to_string(r.storage_numel) + " elements");
    }
    // Row-major contiguity (dims of size 1 may carry any stride, as torch allows).
    int64_t expected = 1;
    uint64_t numel = 1;
    for (size_t d = r.shape.size(); d-- > 0;) {
      if (r.shape[d] != 1 && value->stride[d] != expected) {
        fail(ErrorCode::unsupported, what + ": tensor '" + r.name + "' of size " + shape_string(r.shape) +
                                         " has strides " + shape_string(value->stride) +
                                         ": not contiguous (save tensor.contiguous())");
      }
      if (r.shape[d] != 0 &&
          static_cast<uint64_t>(expected) > (uint64_t{1} << 62) / static_cast<uint64_t>(r.shape[d])) {
        fail(ErrorCode::corrupt, what + ": tensor '" + r.name + "' is impossibly large " + shape_string(r.shape));
      }
      expected *= r.shape[d];
      numel *= static_cast<uint64_t>(r.shape[d]);
    }
    if (numel > 0 && (r.storage_offset > r.storage_numel || numel > r.storage_numel - r.storage_offset)) {
      fail(ErrorCode::corrupt, what + ": tensor '" + r.name + "' (" + std::to_string(numel) + " elements at offset " +
                                   std::to_string(r.storage_offset) + ") runs past its storage of " +
                                   std::to_string(r.storage_numel) + " elements");
    }
    out.push_back(std::move(r));
  }
  return out;
}

// ---------------------------------------------------------------------------------- zip file

namespace {

[[noreturn]] void zip_corrupt(const fs::path& p, const std::string& why) {
  fail(ErrorCode::corrupt, "PyTorch checkpoint '" + p.string() + "': " + why);
}

size_t element_size_of(const std::string& dtype) {
  for (const auto& t : kStorageTypes) {
    if (dtype == t.dtype) return t.element_size;
  }
  return 0;
}

// Reads a whole (small) entry.
std::string read_entry(zip_t* z, zip_uint64_t index, uint64_t size, const fs::path& p, const std::string& name) {
  zip_file_t* f = zip_fopen_index(z, index, 0);
  if (f == nullptr) zip_corrupt(p, "cannot open '" + name + "': " + zip_strerror(z));
  std::string out(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    const zip_int64_t n = zip_fread(f, out.data() + done, size - done);
    if (n <= 0) {
      const std::string why = n < 0 ? zip_file_strerror(f) : "unexpected end";
      zip_fclose(f);
      zip_corrupt(p, "cannot read '" + name + "': " + why);
    }
    done += static_cast<uint64_t>(n);
  }
  zip_fclose(f);
  return out;
}

}  // namespace

std::shared_ptr<TorchCheckpointFile> TorchCheckpointFile::open(const fs::path& path) {
  std::shared_ptr<TorchCheckpointFile> f(new TorchCheckpointFile());
  f->path_ = path;
  {
    std::FILE* probe = std::fopen(path.c_str(), "rb");
    if (probe == nullptr) {
      fail(errno == ENOENT ? ErrorCode::not_found : ErrorCode::io,
           "cannot open '" + path.string() + "': " + std::strerror(errno));
    }
    unsigned char magic[2] = {0, 0};
    const size_t n = std::fread(magic, 1, 2, probe);
    std::fclose(probe);
    if (n == 2 && magic[0] == 0x80) {
      fail(ErrorCode::unsupported, "PyTorch checkpoint '" + path.string() +
                                       "' is in the legacy (torch < 1.6) format, not a zip archive: re-save it "
                                       "with a newer torch.save or convert it to safetensors");
    }
  }
  int err = 0;
  f->zip_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (f->zip_ == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    const std::string why = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    zip_corrupt(path, "not a readable zip archive (" + why + ")");
  }
  zip_t* z = f->zip_;
  // torch.save writes "<archive>/data.pkl", "<archive>/data/<key>" per storage, "<archive>/version".
  std::string prefix;
  const zip_int64_t entries = zip_get_num_entries(z, 0);
  zip_uint64_t pkl_index = 0;
  for (zip_int64_t i = 0; i < entries; ++i) {
    const char* name = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
    if (name == nullptr) continue;
    const std::string n(name);
    const size_t slash = n.find('/');
    if (slash != std::string::npos && n.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!prefix.empty()) zip_corrupt(path, "more than one data.pkl");
      prefix = n.substr(0, slash + 1);
      pkl_index = static_cast<zip_uint64_t>(i);
    }
  }
  if (prefix.empty()) zip_corrupt(path, "a zip archive without <archive>/data.pkl: not a torch.save checkpoint");
  auto stat_of = [&](zip_uint64_t index, const std::string& name) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      zip_corrupt(path, "cannot stat '" + name + "': " + zip_strerror(z));
    }
    return st;
  };
  if (const zip_int64_t bo = zip_name_locate(z, (prefix + "byteorder").c_str(), 0); bo >= 0) {
    const std::string order =
        read_entry(z, static_cast<zip_uint64_t>(bo), std::min<uint64_t>(stat_of(bo, "byteorder").size, 16), path,
                   prefix + "byteorder");
    if (order != "little")
      fail(ErrorCode::unsupported, "PyTorch checkpoint '" + path.string() + "' is " + order + "-endian");
  }
  const zip_stat_t pkl = stat_of(pkl_index, prefix + "data.pkl");
  if (pkl.size > (uint64_t{1} << 30)) zip_corrupt(path, "data.pkl of " + std::to_string(pkl.size) + " bytes");
  const std::string pickle = read_entry(z, pkl_index, pkl.size, path, prefix + "data.pkl");
  const auto records = parse_torch_state_dict(pickle, "PyTorch checkpoint '" + path.string() + "'");

  std::map<std::string, std::pair<zip_uint64_t, uint64_t>> storages;  // key -> entry, size
  for (const auto& r : records) {
    auto it = storages.find(r.storage_key);
    if (it == storages.end()) {
      const std::string entry = prefix + "data/" + r.storage_key;
      const zip_int64_t index = zip_name_locate(z, entry.c_str(), 0);
      if (index < 0) zip_corrupt(path, "tensor '" + r.name + "' refers to storage '" + entry + "', which is missing");
      it = storages
               .emplace(r.storage_key, std::make_pair(static_cast<zip_uint64_t>(index),
                                                      stat_of(static_cast<zip_uint64_t>(index), entry).size))
               .first;
    }
    const size_t es = element_size_of(r.dtype);
    const uint64_t storage_bytes = it->second.second;
    if (storage_bytes != r.storage_numel * es) {
      zip_corrupt(path, "storage '" + r.storage_key + "' holds " + std::to_string(storage_bytes) + " bytes, but " +
                            std::to_string(r.storage_numel) + " " + r.dtype + " elements need " +
                            std::to_string(r.storage_numel * es));
    }
    if (f->find(r.name) != nullptr || f->skipped_.count(r.name))
      zip_corrupt(path, "tensor '" + r.name + "' appears twice");
    TensorInfo info;
    info.name = r.name;
    info.shape = r.shape;
    info.offset = r.storage_offset * es;
    info.length = static_cast<uint64_t>(shape_numel(r.shape)) * es;
    if (r.dtype == "BOOL" || r.dtype == "U8") {
      f->skipped_[r.name] = r.dtype;
      continue;
    }
    info.dtype = dtype_from_name(r.dtype);
    f->add(std::move(info));
    f->entries_.push_back(it->second.first);
    f->entry_sizes_.push_back(storage_bytes);
  }
  return f;
}

TorchCheckpointFile::~TorchCheckpointFile() {
  if (zip_ != nullptr) zip_discard(zip_);
}

void TorchCheckpointFile::read(const TensorInfo& info, void* dst) const {
  const TensorInfo* mine = find(info.name);
  if (mine == nullptr) fail(ErrorCode::not_found, "no tensor '" + info.name + "' in '" + path_.string() + "'");
  const auto i = static_cast<size_t>(mine - tensors_.data());
  const uint64_t entry = entries_[i], entry_size = entry_sizes_[i];
  std::lock_guard<std::mutex> lock(mutex_);
  zip_file_t* f = zip_fopen_index(zip_, entry, 0);
  if (f == nullptr) zip_corrupt(path_, "cannot open the storage of '" + info.name + "': " + zip_strerror(zip_));
  auto fail_read = [&](const std::string& why) {
    zip_fclose(f);
    zip_corrupt(path_, "cannot read tensor '" + info.name + "': " + why);
  };
  auto read_n = [&](char* out, uint64_t n) {
    uint64_t done = 0;
    while (done < n) {
      const zip_int64_t got = zip_fread(f, out + done, n - done);
      if (got < 0) fail_read(zip_file_strerror(f));
      if (got == 0) fail_read("the record ends early");
      done += static_cast<uint64_t>(got);
    }
  };
  if (mine->offset > 0 && zip_fseek(f, static_cast<zip_int64_t>(mine->offset), SEEK_SET) != 0) {
    // Compressed records cannot seek: read up to the offset.
    std::vector<char> skip(1 << 16);
    for (uint64_t left = mine->offset; left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, skip.size());
      read_n(skip.data(), n);
      left -= n;
    }
  }
  read_n(static_cast<char*>(dst), mine->length);
  if (mine->offset == 0 && mine->length == entry_size) {
    char extra;  // reaching the end makes libzip check the record's CRC
    if (zip_fread(f, &extra, 1) != 0) fail_read(std::string("the record fails its check: ") + zip_file_strerror(f));
  }
  zip_fclose(f);
}

}  // namespace surf
