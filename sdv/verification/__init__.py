"""What the DataVerification agent does with a source document, step by step, each in its own
module: `files` (what a file is, whether it is safe to read, its pages), `ocr` (clean-up and
tesseract, words with boxes and confidences), `layout` (lab report rows from word boxes),
`analytes` (which analyte a printed name or an EDC item is, from the synonym table),
`units` (conversions and the matching rule), `matching` (the verdict on each EDC value) and
`services` (the agent's writes: pages, verdicts, candidate queries; the CRA's confirmations)."""
