"""Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers.

kolm-recall's MiniLm must match these (cosine >= 0.999): tests/embedder.rs.
The model comes from the fixture zip (scripts/fixtures.sh), never a hub:

    python=$(scripts/pyref-venv.sh)
    $python crates/kolm-recall/tests/reference/minilm_reference.py \
        ~/.cache/kolm/fixtures/all-MiniLM-L6-v2.zip \
        > crates/kolm-recall/tests/reference/minilm.json
"""
import json
import sys
import tempfile
import zipfile

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The lamp of the lighthouse is trimmed every evening at dusk.",
    "How do I reset my password?",
    "Café crème, naïve résumé — Unicode and accents survive lower-casing.",
    "fn main() { println!(\"hello, world\"); }",
    "a",
    # Longer than the 256-token window: sentence-transformers truncates.
    " ".join(["Tokens beyond the window are dropped by truncation."] * 40),
]

with tempfile.TemporaryDirectory() as d:
    zipfile.ZipFile(sys.argv[1]).extractall(d)
    model = SentenceTransformer(d, device="cpu")
    with torch.no_grad():
        vecs = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)

json.dump(
    {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in v] for v in vecs],
    },
    sys.stdout,
    indent=None,
)
print()
