// Components from a chunk store on any StorageBackend (directory, S3): each chunk checked against
// the manifest's size and checksum while it arrives, then decoded in place.
#include "sources/component_provider.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"

namespace surf {

namespace {

class StoreProvider final : public ComponentProvider {
 public:
  StoreProvider(std::shared_ptr<StorageBackend> backend, std::shared_ptr<BufferPool> pool)
      : backend_(std::move(backend)), pool_(std::move(pool)) {
    ByteBuffer text;
    try {
      backend_->get("manifest.json", text);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        fail(ErrorCode::not_found, backend_->describe() + " is not a chunk store (no manifest.json: " + e.what() + ")");
      }
      throw;
    }
    manifest_ = Manifest::from_json(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
  }

  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return backend_->describe(); }

  FetchResult fetch(const std::string& id) override {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not in the store " + describe());
    auto buf = pool_->acquire(c->bytes);  // the best fitting warm buffer; get_blocks sizes it
    StreamingChecksum sum;
    try {
      backend_->get_blocks(c->key, *buf, [&](const std::byte* data, size_t size) { sum.update(data, size); });
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        fail(ErrorCode::not_found, "component '" + id + "': chunk missing from the store (" + e.what() + ")");
      }
      throw;
    }
    if (buf->size() != c->bytes) {
      fail(ErrorCode::corrupt, "component '" + id + "': chunk is " + std::to_string(buf->size()) +
                                   " bytes, the manifest says " + std::to_string(c->bytes));
    }
    if (sum.hex() != c->checksum) {
      fail(ErrorCode::corrupt,
           "component '" + id + "': checksum mismatch (manifest " + c->checksum + ", chunk " + sum.hex() + ")");
    }
    // Verified above against the manifest: decoding makes no second pass over the bytes.
    FetchResult r;
    r.component = decode_into_component(id, buf, buf->data(), buf->size(), *pool_);
    r.bytes_fetched = buf->size();
    r.chunk = buf->data();
    r.chunk_size = buf->size();
    r.chunk_holder = buf;
    return r;
  }

 private:
  std::shared_ptr<StorageBackend> backend_;
  std::shared_ptr<BufferPool> pool_;
  Manifest manifest_;
};

}  // namespace

std::unique_ptr<ComponentProvider> make_store_provider(std::shared_ptr<StorageBackend> backend,
                                                       std::shared_ptr<BufferPool> pool) {
  return std::make_unique<StoreProvider>(std::move(backend), std::move(pool));
}

}  // namespace surf
