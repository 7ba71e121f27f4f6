from dotenv import load_dotenv

from operategpt.manager import create_app

load_dotenv()
app = create_app()
