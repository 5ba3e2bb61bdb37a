"""Chat prompts for benchmarks with a real chat model: short questions its answers end
naturally after (a sentence to a few paragraphs)."""

from __future__ import annotations

CHAT_PROMPTS = (
    "What is the capital of France? Answer in one sentence.",
    "Give three tips for staying healthy.",
    "Explain photosynthesis to a child.",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "What is 17 * 23? Show your steps.",
    "Write a haiku about the sea.",
    "List the planets of the solar system in order.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "How do I reverse a list in Python?",
    "What year did the Second World War end, and how?",
    "Name five fruits that are red.",
    "Describe the water cycle.",
    "Write a short email declining a meeting invitation.",
    "What is the boiling point of water in Fahrenheit and Celsius?",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
)
