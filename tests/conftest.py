import matplotlib

matplotlib.use("Agg")  # tests draw without a display
