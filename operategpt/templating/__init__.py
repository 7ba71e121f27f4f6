"""Worker call templates: placeholders rendered into URLs, headers and JSON bodies, and the reply extractor."""
