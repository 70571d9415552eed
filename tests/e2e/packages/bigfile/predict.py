# Returns a big file, made sparse so it costs the model nothing: whoever stores it still has to
# read (hash) and copy every byte of it.
import tempfile

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self, megabytes: int = Input(description="Size of the file", default=1024, ge=1, le=4096)
    ) -> Path:
        size = megabytes << 20
        path = Path(tempfile.mkdtemp()) / "big.bin"
        with open(path, "wb") as out:
            out.write(b"head")
            out.truncate(size)
            out.seek(size - 4)
            out.write(b"tail")
        return path
