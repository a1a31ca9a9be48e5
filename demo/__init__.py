"""sslzoo.demo: the Gradio web demo (issue 4)."""
