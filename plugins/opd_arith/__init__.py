"""The embedded demo's arithmetic task: problems, tokenizer, SFT and the offline model build."""
