# Echoes an uploaded image back as a file output (for the web page's upload and image rendering).
import shutil
import tempfile

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(description="A PNG image", accept="image/png")) -> Path:
        out = Path(tempfile.mkdtemp()) / "mirror.png"
        shutil.copyfile(image, out)
        print(f"copied {out.stat().st_size} bytes")
        return out
