"""`python -m operategpt.llmserver`: run the inference server."""

from operategpt.llmserver.serve import main

main()
